//! A small lexer for REPL input: enough of Rhai's token rules (strings, comments, brackets) for completion, hints and
//! finding the `import ... as name` statements whose modules the REPL keeps across inputs. It never fails: anything it
//! does not recognise is punctuation.

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    /// A string literal's contents (escapes left as written).
    Str(String),
    Punct(char),
    /// `::`
    PathSep,
}

/// Where a prefix of the input ends: in code, inside a string literal (opened at byte `start`), or in a comment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum End {
    Code,
    Str { start: usize },
    Comment,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Tokens of `src` with their start byte offsets, and the state at the end of `src`.
pub fn tokens(src: &str) -> (Vec<(usize, Tok)>, End) {
    let b: Vec<(usize, char)> = src.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let (at, c) = b[i];
        let next = b.get(i + 1).map(|x| x.1);
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            match b[i..].iter().position(|x| x.1 == '\n') {
                Some(n) => i += n + 1,
                None => return (out, End::Comment),
            }
        } else if c == '/' && next == Some('*') {
            // Rhai block comments nest.
            let mut depth = 1;
            i += 2;
            while depth > 0 {
                match (b.get(i).map(|x| x.1), b.get(i + 1).map(|x| x.1)) {
                    (None, _) => return (out, End::Comment),
                    (Some('/'), Some('*')) => {
                        depth += 1;
                        i += 2;
                    }
                    (Some('*'), Some('/')) => {
                        depth -= 1;
                        i += 2;
                    }
                    _ => i += 1,
                }
            }
        } else if c == '"' || c == '`' || c == '\'' {
            let quote = c;
            let mut text = String::new();
            i += 1;
            loop {
                match b.get(i).map(|x| x.1) {
                    None => return (out, End::Str { start: at }),
                    Some('\\') if quote != '`' => {
                        text.push('\\');
                        if let Some(&(_, e)) = b.get(i + 1) {
                            text.push(e);
                        }
                        i += 2;
                    }
                    Some(ch) if ch == quote => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        text.push(ch);
                        i += 1;
                    }
                }
            }
            out.push((at, Tok::Str(text)));
        } else if is_ident_start(c) {
            let mut j = i;
            while j < b.len() && is_ident_char(b[j].1) {
                j += 1;
            }
            out.push((at, Tok::Ident(b[i..j].iter().map(|x| x.1).collect())));
            i = j;
        } else if c.is_ascii_digit() {
            while i < b.len() && (is_ident_char(b[i].1) || b[i].1 == '.') {
                i += 1;
            }
        } else if c == ':' && next == Some(':') {
            out.push((at, Tok::PathSep));
            i += 2;
        } else {
            out.push((at, Tok::Punct(c)));
            i += 1;
        }
    }
    (out, End::Code)
}

/// `import "path" as alias` statements outside any block, in order. Imports without `as` bind nothing to keep.
pub fn top_level_imports(src: &str) -> Vec<(String, String)> {
    let (toks, _) = tokens(src);
    let mut depth = 0i32;
    let mut found = Vec::new();
    for (k, (_, t)) in toks.iter().enumerate() {
        match t {
            Tok::Punct('{' | '(' | '[') => depth += 1,
            Tok::Punct('}' | ')' | ']') => depth -= 1,
            Tok::Ident(kw) if kw == "import" && depth == 0 => {
                if let (Some(Tok::Str(path)), Some(Tok::Ident(as_kw)), Some(Tok::Ident(alias))) =
                    (toks.get(k + 1).map(|x| &x.1), toks.get(k + 2).map(|x| &x.1), toks.get(k + 3).map(|x| &x.1))
                    && as_kw == "as"
                {
                    found.push((path.clone(), alias.clone()));
                }
            }
            _ => {}
        }
    }
    found
}

/// The function whose argument list the end of `before` is in: `name`, or `alias::name` for a module function.
pub fn enclosing_call(before: &str) -> Option<String> {
    let (toks, end) = tokens(before);
    if end != End::Code {
        return None;
    }
    let mut stack: Vec<usize> = Vec::new();
    for (k, (_, t)) in toks.iter().enumerate() {
        match t {
            Tok::Punct('(' | '[' | '{') => stack.push(k),
            Tok::Punct(')' | ']' | '}') => {
                stack.pop();
            }
            _ => {}
        }
    }
    let open = *stack.iter().rev().find(|&&k| toks[k].1 == Tok::Punct('('))?;
    let Tok::Ident(name) = &toks.get(open.checked_sub(1)?)?.1 else {
        return None;
    };
    if open >= 3
        && toks[open - 2].1 == Tok::PathSep
        && let Tok::Ident(alias) = &toks[open - 3].1
    {
        return Some(format!("{alias}::{name}"));
    }
    Some(name.clone())
}

/// What comes right before the word being completed.
#[derive(Debug, Clone, PartialEq)]
pub enum Before {
    /// Start of an expression.
    Plain,
    /// After `.`: a method or property.
    Method,
    /// After `alias::`.
    Module(String),
}

/// The identifier being typed at the end of `before`: its start offset, its text, and what precedes it.
pub fn word_before(before: &str) -> (usize, &str, Before) {
    let start =
        before.char_indices().rev().take_while(|&(_, c)| is_ident_char(c)).last().map_or(before.len(), |(i, _)| i);
    let word = &before[start..];
    let head = &before[..start];
    let ctx = if let Some(h) = head.strip_suffix("::") {
        let a = h.char_indices().rev().take_while(|&(_, c)| is_ident_char(c)).last().map_or(h.len(), |(i, _)| i);
        Before::Module(h[a..].to_string())
    } else if head.ends_with('.') && !head.ends_with("..") {
        Before::Method
    } else {
        Before::Plain
    };
    (start, word, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_comments_end_states() {
        assert_eq!(tokens("let a = \"abc").1, End::Str { start: 8 });
        assert_eq!(tokens("let a = \"a\\\"b\"").1, End::Code);
        assert_eq!(tokens("x // note").1, End::Comment);
        assert_eq!(tokens("x /* a /* b */ c").1, End::Comment);
        assert_eq!(tokens("x /* a /* b */ c */ y").0.len(), 2);
    }

    #[test]
    fn finds_only_top_level_imports_with_alias() {
        let src = "import \"stdlib/a\" as a;\nfn f() { import \"stdlib/b\" as b; }\nimport \"c\";\n// import \"d\" as d\nimport `e` as e";
        assert_eq!(top_level_imports(src), vec![("stdlib/a".into(), "a".into()), ("e".into(), "e".into())]);
    }

    #[test]
    fn enclosing_call_skips_closed_calls_and_brackets() {
        assert_eq!(enclosing_call("zeros([2, 3"), Some("zeros".into()));
        assert_eq!(enclosing_call("let y = clamp(abs(x), "), Some("clamp".into()));
        assert_eq!(enclosing_call("abs(x)"), None);
        assert_eq!(enclosing_call("m::train(a, "), Some("m::train".into()));
        assert_eq!(enclosing_call("print(\"(\""), Some("print".into()));
        assert_eq!(enclosing_call("(1 + 2"), None);
    }

    #[test]
    fn word_before_knows_methods_and_modules() {
        assert_eq!(word_before("let t = zer"), (8, "zer", Before::Plain));
        assert_eq!(word_before("t.res"), (2, "res", Before::Method));
        assert_eq!(word_before("m::tr"), (3, "tr", Before::Module("m".into())));
        assert_eq!(word_before("x + "), (4, "", Before::Plain));
    }
}
