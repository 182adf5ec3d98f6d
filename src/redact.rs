//! What must never reach a log line or an error message: the password in a
//! URL's user info. Pure string functions.

/// A URL with the password of its user info replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((cred, host)) => {
            let user = cred.split_once(':').map_or(cred, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_not_shown() {
        for (url, shown) in [
            ("mysql://u:p@ss@h:3306/db", "mysql://u:***@h:3306/db"),
            (
                "http://user:secret@proxy:3128",
                "http://user:***@proxy:3128",
            ),
            ("http://proxy:3128", "http://proxy:3128"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
