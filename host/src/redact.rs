//! The one redaction rule for anything that may carry a secret on its way into a log
//! line or an error: passwords in URLs and secret-looking query options are replaced by
//! `***`, wherever a URL appears in the text.

/// Query options whose value is a secret (matched case-insensitively, by substring).
const SECRET_OPTIONS: [&str; 8] = ["key", "secret", "password", "token", "sig", "credential", "pwd", "sas"];

const MASK: &str = "***";

/// `url` with its password and secret options masked. Text that does not parse as a URL
/// is returned unchanged unless it looks like `scheme://user:password@…`, whose password
/// is masked by hand.
pub fn url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.has_host() || parsed.scheme() == "sqlite" || parsed.scheme() == "file" => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some(MASK));
            }
            let secret_query = parsed.query_pairs().any(|(k, _)| is_secret(&k));
            if secret_query {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret(&k) { MASK.to_owned() } else { v.into_owned() };
                        (k.into_owned(), v)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            // `url` percent-encodes the mask; show it plainly.
            parsed.to_string().replace("%2A%2A%2A", MASK)
        }
        _ => mask_userinfo(url),
    }
}

/// `text` with every URL in it redacted as [`url`] does.
pub fn text(text: &str) -> String {
    if !text.contains("://") {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The scheme runs back to the last character that cannot be in one.
        let scheme_start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | ')' | ','))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..scheme_start]);
        out.push_str(&url(&rest[scheme_start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn is_secret(option: &str) -> bool {
    let option = option.to_ascii_lowercase();
    SECRET_OPTIONS.iter().any(|s| option.contains(s))
}

/// `scheme://user:password@host…` → `scheme://user:***@host…` for text `url` rejects.
fn mask_userinfo(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else { return text.to_owned() };
    let after = &text[scheme_end + 3..];
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let Some(at) = after[..authority_end].rfind('@') else { return text.to_owned() };
    let userinfo = &after[..at];
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{}{user}:{MASK}{}", &text[..scheme_end + 3], &after[at..]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_survive() {
        for (input, hidden) in [
            ("postgres://app:hunter2@db:5432/orders?sslmode=nope", "hunter2"),
            ("mssql://sa:Pa55word!@host:1433/db?trust_server_certificate=true", "Pa55word"),
            ("amqp://guest:guest-secret@127.0.0.1:5672/%2f", "guest-secret"),
            ("az://archive?endpoint=http://x&account_name=dev&access_key=c2VjcmV0", "c2VjcmV0"),
            ("s3://bucket?secret_access_key=AKIAXYZ&region=eu", "AKIAXYZ"),
            ("postgres://u:p%40ss@h/db", "p%40ss"),
            ("notaurl://user:pa ss@host", "pa ss"),
        ] {
            let shown = url(input);
            assert!(!shown.contains(hidden), "{input} → {shown}");
            assert!(shown.contains("***"), "{input} → {shown}");
        }
        assert_eq!(url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }

    #[test]
    fn urls_inside_text_are_redacted() {
        let message = "error connecting to postgres://app:hunter2@db/x: timed out (also amqp://g:pw@h/)";
        let shown = text(message);
        assert!(!shown.contains("hunter2") && !shown.contains(":pw@"), "{shown}");
        assert!(shown.starts_with("error connecting to postgres://app:***@db/x"), "{shown}");
        assert!(shown.ends_with("timed out (also amqp://g:***@h/)"), "{shown}");
        assert_eq!(text("no url here"), "no url here");
    }
}
