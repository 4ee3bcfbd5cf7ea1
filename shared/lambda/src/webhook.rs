//! Authenticating the senders of lead webhooks: the shared secret of `x-webhook-secret`, or a Standard
//! Webhooks signature.

use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Checks the webhook's sender: `x-webhook-secret` equal to the secret (constant time), or a Standard
/// Webhooks signature (`webhook-id`, `webhook-timestamp` within 5 minutes, `webhook-signature`).
pub fn authenticate_webhook(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    if secret.is_empty() {
        return Err(ApiError::internal("webhook_secret is not configured"));
    }
    if let Some(given) = headers.get("x-webhook-secret") {
        let ok: bool = given.as_bytes().ct_eq(secret.as_bytes()).into();
        return if ok {
            Ok(())
        } else {
            Err(ApiError::unauthorized("The webhook secret is wrong."))
        };
    }
    if headers.contains_key(standardwebhooks::HEADER_WEBHOOK_SIGNATURE) {
        // `whsec_<base64>` as the standard says; any other secret is used as raw bytes.
        let verifier = standardwebhooks::Webhook::new(secret)
            .or_else(|_| standardwebhooks::Webhook::from_bytes(secret.as_bytes().to_vec()))
            .map_err(ApiError::internal)?;
        return verifier.verify(body, headers).map_err(|e| {
            use standardwebhooks::WebhookError as E;
            let why = match e {
                E::TimestampTooOldError | E::FutureTimestampError => {
                    "the webhook timestamp is more than 5 minutes from now"
                }
                E::MissingHeader(_) | E::InvalidHeader(_) | E::InvalidTimestamp => {
                    "the webhook-id, webhook-timestamp or webhook-signature header is missing or malformed"
                }
                _ => "the webhook signature does not match",
            };
            ApiError::unauthorized(format!("Webhook authentication failed: {why}."))
        });
    }
    Err(ApiError::unauthorized(
        "Webhook authentication required: an x-webhook-secret header or a Standard Webhooks signature.",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_webhook_takes_the_shared_secret_or_a_standard_signature() {
        let body = br#"{"event":"lead.created"}"#;
        assert!(
            authenticate_webhook("s3cret", &headers(&[("x-webhook-secret", "s3cret")]), body)
                .is_ok()
        );
        assert!(
            authenticate_webhook("s3cret", &headers(&[("x-webhook-secret", "s3cre")]), body)
                .is_err()
        );
        assert!(authenticate_webhook("s3cret", &HeaderMap::new(), body).is_err());

        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let hook = standardwebhooks::Webhook::new(secret).unwrap();
        let now = Utc::now().timestamp();
        let sign = |ts: i64, body: &[u8]| hook.sign("msg_1", ts, body).unwrap();
        let signed = |ts: i64, sig: &str| {
            headers(&[
                ("webhook-id", "msg_1"),
                ("webhook-timestamp", &ts.to_string()),
                ("webhook-signature", sig),
            ])
        };
        assert!(authenticate_webhook(secret, &signed(now, &sign(now, body)), body).is_ok());
        // Rotation: several signatures, one of them ours.
        let several = format!("v1,bm90IG91cnM= {}", sign(now, body));
        assert!(authenticate_webhook(secret, &signed(now, &several), body).is_ok());
        // Tampered body, stale or future timestamps.
        assert!(authenticate_webhook(secret, &signed(now, &sign(now, body)), b"{}").is_err());
        let stale = authenticate_webhook(secret, &signed(now - 301, &sign(now - 301, body)), body)
            .unwrap_err();
        assert!(stale.detail().contains("5 minutes"), "{}", stale.detail());
        assert!(
            authenticate_webhook(secret, &signed(now + 301, &sign(now + 301, body)), body).is_err()
        );
    }
}
