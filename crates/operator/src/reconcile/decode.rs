//! `remoteRef.decodingStrategy`: values stored base64-encoded in the backend (binary
//! keystores, certificates pasted through a web console) become their bytes in the Secret.
//! The strategies and their order of trial are External Secrets Operator's, so a migrated
//! manifest decodes the same bytes.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use secretsync_api::DecodingStrategy;
use secretsync_providers::SecretBytes;

use crate::error::{Error, Result};

/// `value` decoded by `strategy`. `place` says where the value came from (for the error,
/// which never quotes the value).
pub fn decode(strategy: DecodingStrategy, value: SecretBytes, place: &str) -> Result<SecretBytes> {
    let decoded = match strategy {
        DecodingStrategy::None => return Ok(value),
        DecodingStrategy::Base64 => STANDARD.decode(value.expose()).map_err(|_| "base64"),
        DecodingStrategy::Base64Url => URL_SAFE
            .decode(value.expose())
            .map_err(|_| "URL-safe base64"),
        DecodingStrategy::Auto => {
            let bytes = value.expose();
            match STANDARD.decode(bytes).or_else(|_| URL_SAFE.decode(bytes)) {
                Ok(decoded) => Ok(decoded),
                Err(_) => return Ok(value),
            }
        }
    };
    decoded
        .map(SecretBytes::new)
        .map_err(|encoding| Error::Decoding {
            place: place.to_owned(),
            encoding,
            strategy: name(strategy),
        })
}

fn name(strategy: DecodingStrategy) -> &'static str {
    match strategy {
        DecodingStrategy::None => "None",
        DecodingStrategy::Base64 => "Base64",
        DecodingStrategy::Base64Url => "Base64URL",
        DecodingStrategy::Auto => "Auto",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secretsync_api::Reason;

    fn run(strategy: DecodingStrategy, input: &[u8]) -> Result<Vec<u8>> {
        decode(strategy, SecretBytes::new(input.to_vec()), "data[0]").map(|b| b.expose().to_vec())
    }

    #[test]
    fn each_strategy_decodes_what_it_names() {
        // "\xfb\xff" is "+/8=" in standard base64 and "-_8=" URL-safe.
        assert_eq!(run(DecodingStrategy::None, b"+/8=").unwrap(), b"+/8=");
        assert_eq!(run(DecodingStrategy::Base64, b"+/8=").unwrap(), b"\xfb\xff");
        assert_eq!(
            run(DecodingStrategy::Base64Url, b"-_8=").unwrap(),
            b"\xfb\xff"
        );
        assert_eq!(run(DecodingStrategy::Auto, b"+/8=").unwrap(), b"\xfb\xff");
        assert_eq!(run(DecodingStrategy::Auto, b"-_8=").unwrap(), b"\xfb\xff");
    }

    #[test]
    fn auto_keeps_what_is_not_base64() {
        assert_eq!(
            run(DecodingStrategy::Auto, b"hunter2!").unwrap(),
            b"hunter2!"
        );
    }

    #[test]
    fn a_value_not_in_the_named_encoding_is_an_error_that_does_not_quote_it() {
        let err = run(DecodingStrategy::Base64, b"not base64: s3cret!").unwrap_err();
        assert_eq!(err.reason(), Reason::DecodingFailed);
        let message = err.to_string();
        assert!(
            message.contains("data[0]") && message.contains("Base64"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
        assert!(run(DecodingStrategy::Base64Url, b"+/8=").is_err());
        assert!(run(DecodingStrategy::Base64, b"-_8=").is_err());
    }
}
