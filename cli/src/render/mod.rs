//! Renderers: library answers turned into what a person (or `--json`) reads. Commands call
//! them; they compute nothing a library test could not reach.

pub mod copy;
pub mod pipeline;

/// `text` safe for a terminal: control characters (an escape sequence in a hostile key or a
/// URL, a NUL) are shown escaped (`\u{1b}`); line breaks between lines stay.
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\n') {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped_and_text_is_kept() {
        assert_eq!(
            super::terminal_safe("plain 'text'\nline"),
            "plain 'text'\nline"
        );
        assert_eq!(
            super::terminal_safe("bu\u{1b}[31mck\0x"),
            "bu\\u{1b}[31mck\\u{0}x"
        );
    }
}
