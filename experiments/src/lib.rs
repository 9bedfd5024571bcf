//! The `meshsim` command line.
