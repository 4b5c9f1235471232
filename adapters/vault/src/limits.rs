//! Bounds on caller input, checked before a backend sees it.

use crate::error::{Error, Result};

/// The largest message [`Vault::sign`](crate::Vault::sign) accepts: 1 MiB.
///
/// Messages are hashed host-side, so the bound is not a device limit; it keeps a single request
/// from pinning a worker thread and matches what the key service accepts on the wire.
pub const MAX_MESSAGE_LEN: usize = 1024 * 1024;

/// The longest key label, in bytes of UTF-8: 40, the YubiHSM 2 limit, so that a key spec is
/// valid on every backend.
pub const MAX_LABEL_LEN: usize = 40;

/// Checks a message to be signed: at least 1 byte and at most [`MAX_MESSAGE_LEN`] bytes.
///
/// An empty message is refused because signing nothing is almost always a caller bug (an
/// unread file, an empty buffer) and the resulting signature would verify for any other
/// empty input.
pub fn check_message(message: &[u8]) -> Result<()> {
    if message.is_empty() {
        return Err(Error::InvalidInput(
            "message is empty; refusing to sign zero bytes".into(),
        ));
    }
    if message.len() > MAX_MESSAGE_LEN {
        return Err(Error::InvalidInput(format!(
            "message is {} bytes; the limit is {MAX_MESSAGE_LEN} bytes (1 MiB)",
            message.len()
        )));
    }
    Ok(())
}

/// Checks a key label: 1 to [`MAX_LABEL_LEN`] bytes, no control characters.
pub fn check_label(label: &str) -> Result<()> {
    if label.is_empty() {
        return Err(Error::InvalidInput("key label is empty".into()));
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(Error::InvalidInput(format!(
            "key label is {} bytes; the limit is {MAX_LABEL_LEN} bytes",
            label.len()
        )));
    }
    if label.chars().any(char::is_control) {
        return Err(Error::InvalidInput(
            "key label contains a control character".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_bounds() {
        assert!(check_message(b"x").is_ok());
        assert!(check_message(&vec![0; MAX_MESSAGE_LEN]).is_ok());
        let empty = check_message(b"").unwrap_err();
        assert!(empty.to_string().contains("empty"), "{empty}");
        let big = check_message(&vec![0; MAX_MESSAGE_LEN + 1]).unwrap_err();
        assert!(matches!(big, Error::InvalidInput(_)));
        assert!(big.to_string().contains("1048577 bytes"), "{big}");
        assert!(big.to_string().contains("limit is 1048576 bytes"), "{big}");
    }

    #[test]
    fn label_bounds() {
        assert!(check_label("payments-signing").is_ok());
        assert!(check_label(&"a".repeat(MAX_LABEL_LEN)).is_ok());
        assert!(check_label("").unwrap_err().to_string().contains("empty"));
        let long = check_label(&"a".repeat(MAX_LABEL_LEN + 1)).unwrap_err();
        assert!(long.to_string().contains("limit is 40 bytes"), "{long}");
        assert!(
            check_label("a\nb")
                .unwrap_err()
                .to_string()
                .contains("control")
        );
    }
}
