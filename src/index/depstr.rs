//! USE evaluation of dependency-like strings, as Portage applies it when it puts a
//! binpkg's metadata into `Packages`: conditionals (`flag? ( ... )`) are resolved against
//! the package's USE, redundant groups are dissolved, and (for `*DEPEND`) USE-conditional
//! use deps inside atoms (`foo/bar[ssl?]`) are evaluated. The output is the canonical
//! spacing Portage prints: tokens separated by one space, groups as `( ... )`.
//!
//! Binpkgs built by Portage already carry reduced strings, so on real input this is
//! mostly a normalisation; it exists so that any binpkg gives the index Portage writes.

use std::collections::HashSet;
use std::fmt;

/// What was wrong with a dependency string, with the 1-based token position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepError {
    pub message: String,
}

impl fmt::Display for DepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn error(message: String) -> DepError {
    DepError { message }
}

/// One reduced element: a token (atom, license, `||`, ...) or a kept group.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Token(String),
    Group(Vec<Item>),
}

impl Item {
    fn is_token(&self, text: &str) -> bool {
        matches!(self, Item::Token(t) if t == text)
    }
    fn is_conditional(&self) -> bool {
        matches!(self, Item::Token(t) if t.ends_with('?'))
    }
}

/// Placeholder Portage puts where an any-of group lost all its members (EAPI-less
/// evaluation treats an empty `|| ( )` as unsatisfiable, not as true).
const EMPTY_ANY_OF: &str = "__const__/empty-any-of";

/// Resolves USE conditionals in `depstr` for the enabled flags `use_flags` and prints the
/// result. `atoms` says the tokens are package atoms (the `*DEPEND` keys): they are
/// validated and their conditional use deps are evaluated.
pub fn reduce(depstr: &str, use_flags: &HashSet<&str>, atoms: bool) -> Result<String, DepError> {
    let items = reduce_items(depstr, use_flags, atoms)?;
    let mut out = String::with_capacity(depstr.len());
    print_items(&items, &mut out);
    Ok(out)
}

fn print_items(items: &[Item], out: &mut String) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match item {
            Item::Token(t) => out.push_str(t),
            Item::Group(inner) => {
                out.push_str("( ");
                print_items(inner, out);
                out.push_str(" )");
            }
        }
    }
}

fn valid_flag(flag: &str) -> bool {
    let mut chars = flag.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '_' | '@' | '-'))
}

/// Whether the conditional token `flag?` / `!flag?` is in effect.
fn conditional_active(token: &str, use_flags: &HashSet<&str>) -> Result<bool, DepError> {
    let body = &token[..token.len() - 1];
    let (flag, negated) = match body.strip_prefix('!') {
        Some(flag) => (flag, true),
        None => (body, false),
    };
    if !valid_flag(flag) {
        return Err(error(format!(
            "invalid use flag '{flag}' in conditional '{token}'"
        )));
    }
    Ok(use_flags.contains(flag) != negated)
}

fn check_no_glued_operator(token: &str, position: usize) -> Result<(), DepError> {
    for op in [")", "(", "||"] {
        if token.starts_with(op) || token.ends_with(op) {
            return Err(error(format!(
                "missing whitespace around '{op}' at '{token}', token {position}"
            )));
        }
    }
    Ok(())
}

/// Splits the reduction state: `levels[i]` is the list being built at nesting depth i.
/// The element a group follows (`||` or `flag?`) is the last item of the level below it.
struct Levels {
    levels: Vec<Vec<Item>>,
    /// Tokens other than `||` and conditionals are atoms (Portage holds them as atom
    /// objects, which its any-of search looks through like groups).
    atoms: bool,
}

impl Levels {
    fn ends_with_any_of(&self, depth: Option<usize>) -> bool {
        depth
            .and_then(|d| self.levels[d].last())
            .is_some_and(|last| last.is_token("||"))
    }

    /// Whether an any-of operator governs `depth`: walking outwards, levels that are
    /// empty or end in a group (or an atom) are transparent, conditionals are
    /// transparent, `||` governs, and any other token ends the search.
    fn any_of_in_effect(&self, depth: Option<usize>) -> bool {
        let Some(mut d) = depth else { return false };
        loop {
            if let Some(Item::Token(last)) = self.levels[d].last() {
                if last == "||" {
                    return true;
                }
                if !last.ends_with('?') && !self.atoms {
                    return false;
                }
            }
            if d == 0 {
                return false;
            }
            d -= 1;
        }
    }
}

fn reduce_items(
    depstr: &str,
    use_flags: &HashSet<&str>,
    atoms: bool,
) -> Result<Vec<Item>, DepError> {
    let tokens: Vec<&str> = depstr.split_whitespace().collect();
    let mut state = Levels {
        levels: vec![Vec::new()],
        atoms,
    };
    // After `||` or `flag?` the next token must open a group.
    let mut expect_open = false;

    for (index, &token) in tokens.iter().enumerate() {
        let position = index + 1;
        match token {
            "(" => {
                if tokens.get(index + 1) == Some(&")") {
                    return Err(error(format!(
                        "expected: dependency string, got: ')', token {position}"
                    )));
                }
                expect_open = false;
                state.levels.push(Vec::new());
            }
            ")" => {
                if expect_open {
                    return Err(error(format!("expected: '(', got: ')', token {position}")));
                }
                if state.levels.len() < 2 {
                    return Err(error(format!("no matching '(' for ')', token {position}")));
                }
                close_group(&mut state, use_flags)?;
            }
            "||" => {
                if expect_open {
                    return Err(error(format!("expected: '(', got: '||', token {position}")));
                }
                expect_open = true;
                push_current(&mut state, Item::Token(token.to_owned()));
            }
            _ => {
                if expect_open {
                    return Err(error(format!(
                        "expected: '(', got: '{token}', token {position}"
                    )));
                }
                if token.ends_with('?') {
                    expect_open = true;
                    push_current(&mut state, Item::Token(token.to_owned()));
                } else if atoms {
                    if !looks_like_atom(token) {
                        check_no_glued_operator(token, position)?;
                        return Err(error(format!("Invalid atom ({token}), token {position}")));
                    }
                    let evaluated =
                        evaluate_use_dep_conditionals(token, use_flags).map_err(|m| {
                            error(format!("Invalid atom ({token}): {m}, token {position}"))
                        })?;
                    push_current(&mut state, Item::Token(evaluated));
                } else {
                    push_current(&mut state, Item::Token(token.to_owned()));
                }
            }
        }
    }
    if state.levels.len() != 1 {
        return Err(error("Missing ')' at end of string".into()));
    }
    if expect_open {
        return Err(error("Missing '(' at end of string".into()));
    }
    Ok(state.levels.pop().unwrap_or_default())
}

fn push_current(state: &mut Levels, item: Item) {
    if let Some(level) = state.levels.last_mut() {
        level.push(item);
    }
}

/// A `)` closes the innermost group: decide whether its content is dropped (inactive
/// conditional, empty any-of), dissolved into the enclosing list, or kept as a group.
fn close_group(state: &mut Levels, use_flags: &HashSet<&str>) -> Result<(), DepError> {
    let mut content = state.levels.pop().unwrap_or_default();
    let depth = state.levels.len() - 1;
    let outer = depth.checked_sub(1);
    let single = content.len() == 1 || (content.len() == 2 && content[0].is_token("||"));

    let mut dropped = false;
    let parent = &mut state.levels[depth];
    match parent.last() {
        Some(Item::Token(t)) if t == "||" && content.is_empty() => {
            parent.pop();
            content.push(Item::Token(EMPTY_ANY_OF.to_owned()));
        }
        Some(last @ Item::Token(t)) if last.is_conditional() => {
            dropped = !conditional_active(t, use_flags)?;
            parent.pop();
        }
        _ => {}
    }
    if content.is_empty() || dropped {
        return Ok(());
    }

    let parent_any_of = state.ends_with_any_of(Some(depth));
    let inside_any_of = state.ends_with_any_of(outer);
    if !parent_any_of && !inside_any_of {
        // A plain or conditional group outside any-of context means nothing by itself.
        state.levels[depth].extend(content);
    } else if state.levels[depth].is_empty() {
        keep_group(state, depth, content, single);
    } else if single && parent_any_of {
        // `|| ( A )` is just A; `|| ( || ( ... ) )` is the inner any-of.
        state.levels[depth].pop();
        keep_group(state, depth, content, single);
    } else if parent_any_of && inside_any_of {
        // `|| ( A || ( B C ) )` is `|| ( A B C )`.
        state.levels[depth].pop();
        state.levels[depth].extend(content);
    } else {
        keep_group(state, depth, content, single);
    }
    Ok(())
}

/// Adds a group's content to the list at `depth`, keeping brackets only where an
/// any-of needs them to tell its alternatives apart.
fn keep_group(state: &mut Levels, depth: usize, mut content: Vec<Item>, single: bool) {
    let outer = depth.checked_sub(1);
    if !single {
        state.levels[depth].push(Item::Group(content));
        return;
    }
    if content[0].is_token("||") && state.ends_with_any_of(outer) {
        // An any-of directly inside an any-of: its alternatives join the outer one.
        if let Some(Item::Group(alternatives)) = content.pop() {
            state.levels[depth].extend(alternatives);
        }
        return;
    }
    if content.len() == 1 {
        if let Some(Item::Group(_)) = content.first() {
            let in_effect = state.any_of_in_effect(outer);
            if let Some(Item::Group(inner)) = content.pop() {
                if in_effect {
                    state.levels[depth].push(Item::Group(inner));
                } else {
                    state.levels[depth].extend(inner);
                }
            }
            return;
        }
    }
    state.levels[depth].extend(content);
}

/// Whether Portage's atom parser would take `token` (it refuses the package otherwise).
fn looks_like_atom(token: &str) -> bool {
    crate::atom::Atom::parse(token).is_ok()
}

/// Evaluates conditional use deps inside an atom, as Portage does for `*DEPEND`:
/// `x?` keeps `x` only when x is on; `!x?` gives `-x` only when x is off; `x=` and
/// `!x=` become `x`/`-x`. When nothing is conditional the atom is kept verbatim;
/// otherwise it is rebuilt as name, slot part, use deps (a `::repo` part is dropped,
/// as Portage's rebuild does).
fn evaluate_use_dep_conditionals(atom: &str, use_flags: &HashSet<&str>) -> Result<String, String> {
    let Some(open) = atom.find('[') else {
        return Ok(atom.to_owned());
    };
    let Some(use_part) = atom[open..]
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
    else {
        return Err("use dependency not closed by ']'".into());
    };
    let deps: Vec<&str> = use_part.split(',').collect();
    if !deps.iter().any(|d| d.ends_with('?') || d.ends_with('=')) {
        return Ok(atom.to_owned());
    }
    let mut evaluated = Vec::with_capacity(deps.len());
    for dep in deps {
        let (negated, rest) = match dep.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, dep),
        };
        let (body, operator) = match rest.chars().last() {
            Some(c @ ('?' | '=')) => (&rest[..rest.len() - 1], Some(c)),
            _ => (rest, None),
        };
        let Some(operator) = operator else {
            if negated {
                return Err(format!("invalid use dependency '{dep}'"));
            }
            evaluated.push(dep.to_owned());
            continue;
        };
        let flag = body
            .strip_suffix("(+)")
            .or_else(|| body.strip_suffix("(-)"))
            .unwrap_or(body);
        if !valid_flag(flag) {
            return Err(format!("invalid use dependency '{dep}'"));
        }
        let on = use_flags.contains(flag);
        match (operator, negated) {
            ('?', false) if on => evaluated.push(body.to_owned()),
            ('?', true) if !on => evaluated.push(format!("-{body}")),
            ('?', _) => {}
            ('=', false) => evaluated.push(if on {
                body.to_owned()
            } else {
                format!("-{body}")
            }),
            (_, _) => evaluated.push(if on {
                format!("-{body}")
            } else {
                body.to_owned()
            }),
        }
    }
    let head = &atom[..open];
    let name_end = head.find(':').unwrap_or(head.len());
    let mut out = head[..name_end].to_owned();
    if name_end < head.len() {
        let slot = &head[name_end + 1..];
        // `:slot::repo` keeps the slot; a bare `::repo` has none.
        let slot = slot.split("::").next().unwrap_or("");
        if !slot.is_empty() && !head[name_end..].starts_with("::") {
            out.push(':');
            out.push_str(slot);
        }
    }
    if !evaluated.is_empty() {
        out.push('[');
        out.push_str(&evaluated.join(","));
        out.push(']');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str, flags: &[&str], atoms: bool) -> String {
        let set: HashSet<&str> = flags.iter().copied().collect();
        match reduce(s, &set, atoms) {
            Ok(v) => v,
            Err(e) => format!("ERR {e}"),
        }
    }

    #[test]
    fn conditionals_and_groups() {
        assert_eq!(r("a/b x? ( c/d ) !x? ( e/f )", &["x"], true), "a/b c/d");
        assert_eq!(r("a/b x? ( c/d ) !x? ( e/f )", &[], true), "a/b e/f");
        assert_eq!(r("|| ( a/b )", &[], true), "a/b");
        assert_eq!(r("|| ( ( a/b c/d ) )", &[], true), "a/b c/d");
        assert_eq!(
            r("|| ( a/b || ( c/d e/f ) )", &[], true),
            "|| ( a/b c/d e/f )"
        );
        assert_eq!(r("|| ( x? ( a/b ) y/z )", &[], true), "y/z");
        assert_eq!(r("|| ( x? ( a/b ) )", &[], true), EMPTY_ANY_OF);
        assert_eq!(
            r("|| ( ( a/b c/d ) e/f )", &[], true),
            "|| ( ( a/b c/d ) e/f )"
        );
        assert_eq!(r("  MIT\n  GPL-2 ", &[], false), "MIT GPL-2");
    }

    #[test]
    fn use_deps_in_atoms() {
        assert_eq!(r("foo/bar[x?,-y,!z?,w=]", &["w"], true), "foo/bar[-y,-z,w]");
        assert_eq!(r("foo/bar:1/2=[x?]", &["w"], true), "foo/bar:1/2=");
        assert_eq!(r("foo/bar::gentoo[x?]", &[], true), "foo/bar");
        assert_eq!(r("foo/bar:1::gentoo[x?]", &[], true), "foo/bar:1");
        assert_eq!(
            r(">=foo/bar-1.2:=[x(+)?,y(-)=,!z(+)=]", &["y"], true),
            ">=foo/bar-1.2:=[y(-),z(+)]"
        );
        assert_eq!(r("foo/bar[x?]", &["x"], false), "foo/bar[x?]");
    }

    #[test]
    fn malformed() {
        assert!(r("|| ( )", &[], true).starts_with("ERR"));
        assert!(r("a/b )", &[], true).starts_with("ERR no matching"));
        assert!(r("( a/b", &[], true).starts_with("ERR Missing ')'"));
        assert!(r("x? a/b", &[], true).starts_with("ERR expected: '('"));
        assert!(r("notanatom", &[], true).starts_with("ERR Invalid atom"));
    }
}
