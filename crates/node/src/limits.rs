//! The request size limit's status. tonic refuses a request message over `max_decoding_message_size`
//! with OUT_OF_RANGE; gRPC's own guidance, and the stock clients that check for it, expect
//! RESOURCE_EXHAUSTED for a message larger than the server accepts. This rewrites that one answer.

use tonic::codegen::http;

/// What tonic's decoder says when a message is over the limit (tonic 0.14 `codec/decode.rs`).
const OVERSIZED: &str = "decoded message length too large";

/// Turns tonic's OUT_OF_RANGE for an over-size request into RESOURCE_EXHAUSTED, with the same message.
/// Every other answer passes unchanged.
pub fn oversized_is_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers();
    let out_of_range = headers.get("grpc-status").is_some_and(|v| v.as_bytes() == b"11");
    let oversized = out_of_range
        && headers.get("grpc-message").is_some_and(|m| {
            // The message is percent-encoded on the wire.
            let text = m.to_str().unwrap_or_default().replace("%20", " ");
            text.contains(OVERSIZED)
        });
    if oversized {
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

/// Largest request a client may send (requests are small: an identifier and a context).
pub const REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Largest response (a child's whole view).
pub const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: &'static str, message: &'static str) -> http::Response<()> {
        let mut r = http::Response::new(());
        r.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static(status));
        r.headers_mut()
            .insert("grpc-message", http::HeaderValue::from_static(message));
        r
    }

    #[test]
    fn only_the_size_limit_becomes_resource_exhausted() {
        let over = oversized_is_resource_exhausted(response(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%209%20bytes",
        ));
        assert_eq!(over.headers()["grpc-status"], "8");
        let other = oversized_is_resource_exhausted(response("11", "page out of range"));
        assert_eq!(other.headers()["grpc-status"], "11");
        let ok = oversized_is_resource_exhausted(response("0", ""));
        assert_eq!(ok.headers()["grpc-status"], "0");
    }
}
