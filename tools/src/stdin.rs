//! Reading text from stdin: invalid UTF-8 is an error naming the line and the byte, not a lossy guess.

use std::io::BufRead;

use anyhow::{bail, Result};

/// `bytes` (line `line`, 1-based) as text, or an error naming the line and the first bad byte.
fn utf8(bytes: Vec<u8>, line: usize) -> Result<String> {
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let byte = e.as_bytes()[at];
            bail!(
                "stdin line {line} is not valid UTF-8: byte {} (0x{byte:02x}) of the line",
                at + 1
            )
        }
    }
}

/// All of `input` as text.
pub fn read_all(input: impl BufRead) -> Result<String> {
    let mut text = String::new();
    for line in lines_with_ends(input) {
        text.push_str(&line?);
    }
    Ok(text)
}

/// The lines of `input` without their `\n` / `\r\n`, each checked to be UTF-8.
pub fn lines(input: impl BufRead) -> impl Iterator<Item = Result<String>> {
    lines_with_ends(input).map(|l| {
        let mut l = l?;
        if l.ends_with('\n') {
            l.pop();
            if l.ends_with('\r') {
                l.pop();
            }
        }
        Ok(l)
    })
}

/// The lines of `input`, line ends kept.
fn lines_with_ends(mut input: impl BufRead) -> impl Iterator<Item = Result<String>> {
    let mut n = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut buf = Vec::new();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                n += 1;
                let r = utf8(buf, n);
                done = r.is_err();
                Some(r)
            }
            Err(e) => {
                done = true;
                Some(Err(anyhow::Error::new(e).context("cannot read stdin")))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_line_and_byte() {
        let e = read_all(&b"ok\nab\xffc\n"[..]).unwrap_err().to_string();
        assert_eq!(e, "stdin line 2 is not valid UTF-8: byte 3 (0xff) of the line");
        let got: Vec<String> = lines(&b"a\r\nb\n\nc"[..]).map(|l| l.unwrap()).collect();
        assert_eq!(got, ["a", "b", "", "c"]);
        assert_eq!(read_all(&b"x\ny\n"[..]).unwrap(), "x\ny\n");
    }
}
