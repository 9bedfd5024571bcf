// Shared by the mesh examples and benches (included with `include!`): the xDS size table and
// the calibration file, read from the repository (or the paths in MESHSIM_XDS_SIZES /
// MESHSIM_CALIBRATION).

fn xds_sizes() -> meshsim_models::XdsSizes {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/xds-sizes.toml");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/xds-sizes-fixture.toml");
    let path = std::env::var("MESHSIM_XDS_SIZES").unwrap_or_else(|_| {
        if std::path::Path::new(shipped).exists() {
            shipped.into()
        } else {
            eprintln!("note: {shipped} missing; using the test fixture {fixture}");
            fixture.into()
        }
    });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(1)
    });
    meshsim_models::XdsSizes::from_toml_str(&text).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(1)
    })
}

fn calibration() -> meshsim_models::CalibrationFile {
    match std::env::var("MESHSIM_CALIBRATION") {
        Ok(path) => {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            meshsim_models::CalibrationFile::from_toml_str(&text, &path).unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(1)
            })
        }
        Err(_) => meshsim_models::CalibrationFile::reference(),
    }
}
