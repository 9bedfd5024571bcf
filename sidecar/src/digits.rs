//! Decimal and hex digits written straight into buffers: on the request path (and in the
//! access-log writer) the `fmt` machinery behind `format!` / `write!` costs more than the
//! numbers it formats (see `bench --instructions` in `sidecar/ARCHITECTURE.md`).

/// The decimal digits of `n`, in the tail of `buf`.
pub fn decimal(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(decimal(n, &mut [0u8; 20]));
}

/// Appends `n` in decimal, zero-padded to at least `width` digits.
pub fn push_decimal_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = [0u8; 20];
    let d = decimal(n, &mut buf);
    out.extend(std::iter::repeat_n(b'0', width.saturating_sub(d.len())));
    out.extend_from_slice(d);
}

/// Appends `n` in decimal to a string.
pub fn push_decimal_str(out: &mut String, n: u64) {
    out.extend(decimal(n, &mut [0u8; 20]).iter().map(|&d| char::from(d)));
}

/// Fills `out` with `v`'s low `out.len() * 4` bits as lowercase hex, most significant first.
pub fn put_hex(out: &mut [u8], mut v: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_what_formatting_gives() {
        for n in [0, 7, 10, 99, 100, 1_234_567_890, u64::MAX] {
            let mut v = Vec::new();
            push_decimal(&mut v, n);
            assert_eq!(v, n.to_string().into_bytes());
            let mut s = String::from("k:");
            push_decimal_str(&mut s, n);
            assert_eq!(s, format!("k:{n}"));
            for width in [0, 2, 3, 25] {
                let mut v = Vec::new();
                push_decimal_padded(&mut v, n, width);
                assert_eq!(v, format!("{n:0width$}").into_bytes());
            }
        }
        for v in [
            0u128,
            1,
            0xab,
            u128::from(u64::MAX),
            u128::MAX,
            0x0123_4567_89ab_cdef,
        ] {
            let mut b = [0u8; 32];
            put_hex(&mut b, v);
            assert_eq!(&b[..], format!("{v:032x}").as_bytes());
            let mut b = [0u8; 16];
            put_hex(&mut b, v);
            assert_eq!(&b[..], format!("{:016x}", v as u64).as_bytes());
        }
    }
}
