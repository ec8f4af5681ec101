//! Condition expressions of `param_traffic_control` strategies (SPEC §4.3).
//!
//! Grammar (hand-written recursive descent, lowest precedence first):
//! ```text
//! or      := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | "(" or ")" | operand ( cmp operand )?
//! cmp     := "==" | "!=" | "<" | "<=" | ">" | ">="
//! operand := header.NAME | query.NAME | path | method
//!          | sysparam.ClientIp | sysparam.UserAgent
//!          | 'string' | "string" | integer
//! ```
//! Semantics:
//! - A missing header or query parameter evaluates to the empty string, so
//!   `header.x == ''` holds when the header is absent and `header.x != 'a'` too.
//! - A comparison is numeric when both sides parse as 64-bit integers, otherwise
//!   it compares the strings byte-wise (case-sensitive; `method` is upper case as
//!   received).
//! - A bare operand is true when its value is non-empty (`header.x` = "present and
//!   not empty"; `!header.x` = "absent or empty").
//! - Keywords (`header`, `query`, `path`, `method`, `sysparam`, and the sysparam
//!   names) are case-insensitive; header names are case-insensitive, query names
//!   are not. Strings accept `\\`, `\'` and `\"` escapes.
//!
//! Parse errors carry the byte position in the source. Nesting is limited to
//! [`MAX_DEPTH`] so hostile input cannot overflow the stack; the parser never panics.

use http::HeaderName;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;

/// Deepest nesting of parentheses / `!` accepted.
pub const MAX_DEPTH: usize = 64;

/// What an expression can read of a request.
pub trait Context {
    fn header(&self, name: &HeaderName) -> Option<Cow<'_, str>>;
    fn query(&self, name: &str) -> Option<Cow<'_, str>>;
    fn path(&self) -> &str;
    fn method(&self) -> &str;
    fn client_ip(&self) -> IpAddr;
    fn user_agent(&self) -> Option<Cow<'_, str>> {
        self.header(&http::header::USER_AGENT)
    }
}

/// A parse error: byte offset into the source and what was wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub pos: usize,
    pub msg: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.pos, self.msg)
    }
}
impl std::error::Error for ExprError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    Header(HeaderName),
    Query(String),
    Path,
    Method,
    ClientIp,
    UserAgent,
    /// A literal: its text and, when it is an integer, its value.
    Const(String, Option<i64>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(Operand, CmpOp, Operand),
    /// A bare operand: true when non-empty.
    Truthy(Operand),
}

impl Expr {
    /// Parses an expression. An empty (or blank) source is an error here; callers
    /// treat an empty condition as "always".
    pub fn parse(src: &str) -> Result<Expr, ExprError> {
        let mut p = Parser {
            src,
            b: src.as_bytes(),
            pos: 0,
            depth: 0,
        };
        p.skip_ws();
        if p.pos == p.b.len() {
            return Err(p.err("empty expression"));
        }
        let e = p.or()?;
        p.skip_ws();
        if p.pos < p.b.len() {
            return Err(p.err(format!("unexpected {}", p.describe_here())));
        }
        Ok(e)
    }

    /// Evaluates the condition; allocation-free except for `sysparam.ClientIp`.
    pub fn eval(&self, cx: &dyn Context) -> bool {
        match self {
            Expr::Or(a, b) => a.eval(cx) || b.eval(cx),
            Expr::And(a, b) => a.eval(cx) && b.eval(cx),
            Expr::Not(a) => !a.eval(cx),
            Expr::Truthy(o) => !o.value(cx).is_empty(),
            Expr::Cmp(l, op, r) => {
                let (lv, rv) = (l.value(cx), r.value(cx));
                let ord = match (l.int(&lv), r.int(&rv)) {
                    (Some(a), Some(b)) => a.cmp(&b),
                    _ => lv.as_bytes().cmp(rv.as_bytes()),
                };
                match op {
                    CmpOp::Eq => ord == Ordering::Equal,
                    CmpOp::Ne => ord != Ordering::Equal,
                    CmpOp::Lt => ord == Ordering::Less,
                    CmpOp::Le => ord != Ordering::Greater,
                    CmpOp::Gt => ord == Ordering::Greater,
                    CmpOp::Ge => ord != Ordering::Less,
                }
            }
        }
    }
}

impl Operand {
    fn value<'s, 'c: 's>(&'s self, cx: &'c dyn Context) -> Cow<'s, str> {
        match self {
            Operand::Header(n) => cx.header(n).unwrap_or(Cow::Borrowed("")),
            Operand::Query(n) => cx.query(n).unwrap_or(Cow::Borrowed("")),
            Operand::Path => Cow::Borrowed(cx.path()),
            Operand::Method => Cow::Borrowed(cx.method()),
            Operand::UserAgent => cx.user_agent().unwrap_or(Cow::Borrowed("")),
            Operand::ClientIp => Cow::Owned(cx.client_ip().to_string()),
            Operand::Const(s, _) => Cow::Borrowed(s.as_str()),
        }
    }

    fn int(&self, v: &str) -> Option<i64> {
        match self {
            Operand::Const(_, n) => *n,
            _ => parse_int(v),
        }
    }
}

fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

struct Parser<'s> {
    src: &'s str,
    b: &'s [u8],
    pos: usize,
    depth: usize,
}

impl<'s> Parser<'s> {
    fn err(&self, msg: impl Into<String>) -> ExprError {
        ExprError {
            pos: self.pos,
            msg: msg.into(),
        }
    }

    fn describe_here(&self) -> String {
        match self.src.get(self.pos..).and_then(|s| s.chars().next()) {
            Some(c) => format!("{c:?}"),
            None => "end of expression".into(),
        }
    }

    fn skip_ws(&mut self) {
        while self.pos < self.b.len() && self.b[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, tok: &str) -> bool {
        self.skip_ws();
        if self.b[self.pos..].starts_with(tok.as_bytes()) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(format!("expression nested deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.and()?;
        while self.eat("||") {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        self.skip_ws();
        // `!` but not `!=` (a comparison cannot start an expression anyway).
        if self.b[self.pos..].starts_with(b"!") && !self.b[self.pos..].starts_with(b"!=") {
            self.pos += 1;
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        if self.eat("(") {
            self.enter()?;
            let inner = self.or()?;
            self.depth -= 1;
            if !self.eat(")") {
                return Err(self.err(format!("expected ')', found {}", self.describe_here())));
            }
            return Ok(inner);
        }
        let left = self.operand()?;
        match self.cmp_op() {
            Some(op) => {
                let right = self.operand()?;
                Ok(Expr::Cmp(left, op, right))
            }
            None => Ok(Expr::Truthy(left)),
        }
    }

    fn cmp_op(&mut self) -> Option<CmpOp> {
        self.skip_ws();
        const OPS: [(&str, CmpOp); 6] = [
            ("==", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            ("<=", CmpOp::Le),
            (">=", CmpOp::Ge),
            ("<", CmpOp::Lt),
            (">", CmpOp::Gt),
        ];
        for (tok, op) in OPS {
            if self.b[self.pos..].starts_with(tok.as_bytes()) {
                self.pos += tok.len();
                return Some(op);
            }
        }
        None
    }

    fn operand(&mut self) -> Result<Operand, ExprError> {
        self.skip_ws();
        let start = self.pos;
        match self.b.get(self.pos) {
            None => Err(self.err("expected an operand, found end of expression")),
            Some(b'\'') | Some(b'"') => self.string(),
            Some(c) if c.is_ascii_digit() || *c == b'-' => {
                self.pos += 1;
                while self.pos < self.b.len() && self.b[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                let text = &self.src[start..self.pos];
                match parse_int(text) {
                    Some(n) => Ok(Operand::Const(text.to_string(), Some(n))),
                    None => Err(ExprError {
                        pos: start,
                        msg: format!("invalid integer {text:?}"),
                    }),
                }
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let word = self.ident();
                self.variable(start, word)
            }
            Some(_) => Err(self.err(format!(
                "expected an operand, found {}",
                self.describe_here()
            ))),
        }
    }

    fn ident(&mut self) -> &'s str {
        let start = self.pos;
        while self.pos < self.b.len()
            && (self.b[self.pos].is_ascii_alphanumeric() || self.b[self.pos] == b'_')
        {
            self.pos += 1;
        }
        &self.src[start..self.pos]
    }

    /// NAME after `header.` / `query.`: letters, digits, `-`, `_`, `.`, `[`, `]`.
    fn name(&mut self) -> &'s str {
        let start = self.pos;
        while self.pos < self.b.len()
            && (self.b[self.pos].is_ascii_alphanumeric()
                || matches!(self.b[self.pos], b'-' | b'_' | b'.' | b'[' | b']'))
        {
            self.pos += 1;
        }
        &self.src[start..self.pos]
    }

    fn variable(&mut self, start: usize, word: &str) -> Result<Operand, ExprError> {
        let lower = word.to_ascii_lowercase();
        match lower.as_str() {
            "path" => return Ok(Operand::Path),
            "method" => return Ok(Operand::Method),
            "header" | "query" | "sysparam" => {}
            _ => {
                return Err(ExprError {
                    pos: start,
                    msg: format!(
                        "unknown operand {word:?} (expected header.NAME, query.NAME, path, method, \
                         sysparam.ClientIp, sysparam.UserAgent or a constant)"
                    ),
                })
            }
        }
        if self.b.get(self.pos) != Some(&b'.') {
            return Err(self.err(format!("expected '.' and a name after {word:?}")));
        }
        self.pos += 1;
        let name_pos = self.pos;
        let name = self.name();
        if name.is_empty() {
            return Err(self.err(format!("expected a name after \"{word}.\"")));
        }
        match lower.as_str() {
            "header" => HeaderName::from_bytes(name.as_bytes())
                .map(Operand::Header)
                .map_err(|_| ExprError {
                    pos: name_pos,
                    msg: format!("invalid header name {name:?}"),
                }),
            "query" => Ok(Operand::Query(name.to_string())),
            _ => match name.to_ascii_lowercase().as_str() {
                "clientip" => Ok(Operand::ClientIp),
                "useragent" => Ok(Operand::UserAgent),
                _ => Err(ExprError {
                    pos: name_pos,
                    msg: format!(
                        "unknown system parameter {name:?} (expected ClientIp or UserAgent)"
                    ),
                }),
            },
        }
    }

    fn string(&mut self) -> Result<Operand, ExprError> {
        let start = self.pos;
        let quote = self.b[self.pos];
        self.pos += 1;
        let mut out = String::new();
        let mut seg = self.pos;
        while self.pos < self.b.len() {
            let c = self.b[self.pos];
            if c == quote {
                out.push_str(&self.src[seg..self.pos]);
                self.pos += 1;
                let n = parse_int(&out);
                return Ok(Operand::Const(out, n));
            }
            if c == b'\\' {
                out.push_str(&self.src[seg..self.pos]);
                match self.b.get(self.pos + 1) {
                    Some(e @ (b'\\' | b'\'' | b'"')) => {
                        out.push(*e as char);
                        self.pos += 2;
                        seg = self.pos;
                        continue;
                    }
                    _ => {
                        return Err(self.err("invalid escape (only \\\\, \\' and \\\" are allowed)"))
                    }
                }
            }
            self.pos += 1;
        }
        Err(ExprError {
            pos: start,
            msg: "unterminated string".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Cx {
        headers: HashMap<String, String>,
        query: HashMap<String, String>,
        path: String,
        method: String,
        ip: IpAddr,
    }

    impl Context for Cx {
        fn header(&self, name: &HeaderName) -> Option<Cow<'_, str>> {
            self.headers
                .get(name.as_str())
                .map(|s| Cow::Borrowed(s.as_str()))
        }
        fn query(&self, name: &str) -> Option<Cow<'_, str>> {
            self.query.get(name).map(|s| Cow::Borrowed(s.as_str()))
        }
        fn path(&self) -> &str {
            &self.path
        }
        fn method(&self) -> &str {
            &self.method
        }
        fn client_ip(&self) -> IpAddr {
            self.ip
        }
    }

    fn cx() -> Cx {
        Cx {
            headers: [("x-user", "alice"), ("x-n", "42"), ("user-agent", "curl/8")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            query: [("page", "7"), ("q", "rust")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            path: "/v1/users".into(),
            method: "GET".into(),
            ip: "10.1.2.3".parse().unwrap(),
        }
    }

    fn t(src: &str) -> bool {
        let e = Expr::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        e.eval(&cx())
    }

    #[test]
    fn operands_and_operators() {
        assert!(t("header.X-User == 'alice'"));
        assert!(t("header.x-user == \"alice\""));
        assert!(t("HEADER.x-user != 'bob'"));
        assert!(t("query.page == 7"));
        assert!(t("query.page < 10"));
        assert!(t("query.page <= 7"));
        assert!(t("query.page > -3"));
        assert!(t("query.page >= 7"));
        assert!(!t("query.page > 7"));
        assert!(t("path == '/v1/users'"));
        assert!(t("method == 'GET'"));
        assert!(!t("method == 'get'"));
        assert!(t("sysparam.ClientIp == '10.1.2.3'"));
        assert!(t("sysparam.UserAgent == 'curl/8'"));
        assert!(t("sysparam.useragent != ''"));
    }

    #[test]
    fn numbers_vs_strings() {
        // numeric: 42 > 9; as strings "42" < "9"
        assert!(t("header.x-n > 9"));
        assert!(t("header.x-n > '9'"));
        assert!(t("header.x-n == '042'"));
        // one side non-numeric: string compare
        assert!(t("query.q > 100"));
        assert!(t("path > 'a'") == ("/v1/users" > "a"));
    }

    #[test]
    fn missing_is_empty() {
        assert!(t("header.absent == ''"));
        assert!(t("header.absent != 'a'"));
        assert!(t("!header.absent"));
        assert!(t("header.x-user"));
        assert!(!t("query.none"));
        assert!(t("query.none < 'a'"));
    }

    #[test]
    fn precedence_and_grouping() {
        // && binds tighter than ||
        assert!(t("method == 'POST' && path == '/x' || query.q == 'rust'"));
        assert!(!t(
            "method == 'POST' && (path == '/x' || query.q == 'rust')"
        ));
        assert!(t("!method == 'POST'"));
        assert!(t("!(method == 'POST') && !!(query.page == 7)"));
        assert!(t("((((query.page == 7))))"));
        assert!(t("1 < 2 && 'b' > 'a' || 0"));
        let e = Expr::parse("a_is_not_valid == 1");
        assert!(e.is_err());
        let e = Expr::parse("method=='GET'||path=='/'&&query.q=='x'").unwrap();
        assert!(matches!(e, Expr::Or(_, ref r) if matches!(**r, Expr::And(_, _))));
    }

    #[test]
    fn quotes_and_escapes() {
        let e = Expr::parse(r#"header.x == 'it\'s "q"'"#).unwrap();
        match e {
            Expr::Cmp(_, _, Operand::Const(s, None)) => assert_eq!(s, "it's \"q\""),
            other => panic!("{other:?}"),
        }
        let e = Expr::parse(r#"header.x == "a\\b""#).unwrap();
        assert!(matches!(e, Expr::Cmp(_, _, Operand::Const(ref s, None)) if s == "a\\b"));
        assert!(t("'héllo' == 'héllo'"));
    }

    #[test]
    fn errors_carry_positions() {
        let err = |s: &str| Expr::parse(s).unwrap_err();
        assert_eq!(err("").pos, 0);
        assert_eq!(err("   ").msg, "empty expression");
        let e = err("method == ");
        assert_eq!(e.pos, 10);
        assert!(e.msg.contains("end of expression"), "{e}");
        assert_eq!(err("method == 'GET").pos, 10);
        assert_eq!(err("method == 'GET' &&").pos, 18);
        assert_eq!(err("(method == 'GET'").pos, 16);
        assert_eq!(err("foo == 1").pos, 0);
        assert_eq!(err("header. == 1").pos, 7);
        assert_eq!(err("sysparam.Nope == 1").pos, 9);
        assert_eq!(err("method == 'GET' )").pos, 16);
        assert_eq!(err("method = 'GET'").pos, 7);
        assert_eq!(err("query.a == 99999999999999999999").pos, 11);
        assert_eq!(err("path == 'a\\n'").pos, 10);
        assert_eq!(err("method == 'GET' # x").pos, 16);
        let deep = "(".repeat(200) + "path" + &")".repeat(200);
        assert!(err(&deep).msg.contains("nested"));
        let nots = "!".repeat(100_000) + "path";
        assert!(err(&nots).msg.contains("nested"));
        assert_eq!(format!("{}", err("foo")), "at byte 0: unknown operand \"foo\" (expected header.NAME, query.NAME, path, method, sysparam.ClientIp, sysparam.UserAgent or a constant)");
    }

    #[test]
    fn garbage_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet: Vec<char> = "ab01 -_.()!=<>&|'\"\\héq\u{1F600}\t".chars().collect();
        let pieces = [
            "header.",
            "query.",
            "path",
            "method",
            "sysparam.ClientIp",
            "==",
            "!=",
            "&&",
            "||",
            "(",
            ")",
            "'x'",
            "\"y\"",
            "12",
            "!",
            "<=",
            ">",
        ];
        let c = cx();
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..rng.gen_range(0..24) {
                if rng.gen_bool(0.5) {
                    s.push(alphabet[rng.gen_range(0..alphabet.len())]);
                } else {
                    s.push_str(pieces[rng.gen_range(0..pieces.len())]);
                }
            }
            if let Ok(e) = Expr::parse(&s) {
                let _ = e.eval(&c);
            } else if let Err(e) = Expr::parse(&s) {
                assert!(e.pos <= s.len(), "{s:?}: {e}");
            }
        }
    }
}
