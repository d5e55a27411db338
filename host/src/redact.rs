//! The one redaction rule for anything that may carry a secret on its way into a log
//! line or an error: passwords in URLs and secret-looking query options are replaced by
//! `***`, wherever a URL appears in the text.

/// Query options whose value is a secret (matched case-insensitively, by substring).
const SECRET_OPTIONS: [&str; 8] = ["key", "secret", "password", "token", "sig", "credential", "pwd", "sas"];

const MASK: &str = "***";

/// `url` with its password and secret options masked.
///
/// The userinfo runs to the *last* `@`: a password typed without percent-encoding may
/// hold `/`, `#`, `?`, `:` or `@`, which a URL parser reads as the end of the authority
/// (then the password passes for a host, port, path or fragment). Masking from the
/// first `:` to the last `@` can hide a little more than a password when an `@` also
/// appears later in the URL; it never shows one.
pub fn url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return options(url) };
    let (scheme, after) = url.split_at(scheme_end);
    let Some((userinfo, host_on)) = after.rsplit_once('@') else { return options(url) };
    let Some((user, _password)) = userinfo.split_once(':') else { return options(url) };
    // Options are judged on the URL without its userinfo, which a parser could misread.
    let rest = options(&format!("{scheme}{host_on}"));
    let host_on = rest.find("://").map_or(host_on, |i| &rest[i + 3..]);
    format!("{scheme}{user}:{MASK}@{host_on}")
}

/// `url` (with no password in it) with its secret query options masked; unchanged if
/// it does not parse.
fn options(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.has_host() || parsed.scheme() == "sqlite" || parsed.scheme() == "file" => {
            if !parsed.query_pairs().any(|(k, _)| is_secret(&k)) {
                return url.to_owned();
            }
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(k, v)| {
                    let v = if is_secret(&k) { MASK.to_owned() } else { v.into_owned() };
                    (k.into_owned(), v)
                })
                .collect();
            parsed.query_pairs_mut().clear().extend_pairs(pairs);
            // `url` percent-encodes the mask; show it plainly.
            parsed.to_string().replace("%2A%2A%2A", MASK)
        }
        _ => url.to_owned(),
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
        let word_end = |stop: &dyn Fn(char) -> bool| rest[at..].find(stop).map_or(rest.len(), |i| at + i);
        let long_end = word_end(&|c| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'));
        let short_end = word_end(&|c| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | ')' | ','));
        // A `)` or `,` ends a URL in prose, unless an `@` follows: then it may be
        // inside a password.
        let end = if rest[short_end..long_end].contains('@') { long_end } else { short_end };
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
            ("amqp://guest:pa/ss#w?rd@host:5672/%2f", "pa/ss#w?rd"),
            ("amqp://guest:12/x@host:5672/%2f", "12/x"),
            ("postgres://u:a#b@h/db", "a#b"),
            ("postgres://u:q?x=1@h/db?sslmode=disable", "q?x=1"),
            ("amqp://u:p@ss/w@h/", "p@ss/w"),
            ("amqp://u:pa,ss)x@h/", "pa,ss)x"),
        ] {
            let shown = url(input);
            assert!(!shown.contains(hidden), "{input} → {shown}");
            assert!(shown.contains("***"), "{input} → {shown}");
        }
        assert_eq!(url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
        assert_eq!(url("amqp://guest:pa/ss#w?rd@host:5672/%2f"), "amqp://guest:***@host:5672/%2f");
        assert_eq!(url("postgres://u:a#b@h/db?password=x"), "postgres://u:***@h/db?password=***");
    }

    #[test]
    fn no_password_piece_survives_in_text() {
        for password in ["pA9/sS8#wQ7?rZ6", "aQ1#bW2/cE3", "qR4?x=1", "pT5@sY6/wU7", "pI8,sO9)xP0", "xK1:yL2/zM3"] {
            for message in [
                format!("cannot connect to amqp://guest:{password}@127.0.0.1:5672/%2f: refused"),
                format!("(url \"postgres://app:{password}@db:5432/orders\")"),
                format!("amqp://guest:{password}@h"),
            ] {
                let shown = text(&message);
                for piece in password.split(['/', '#', '?', '@', ',', ')', ':', '=']).filter(|p| p.len() > 2) {
                    assert!(!shown.contains(piece), "{message} → {shown}");
                }
                assert!(shown.contains("***"), "{message} → {shown}");
            }
        }
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
