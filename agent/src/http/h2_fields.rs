//! The fields of one HTTP/2 header block: pseudo-headers (RFC 9113 section 8.3) apart from the
//! rest, and the checks that make a request or a response of them.

use crate::http::Headers;

/// The pseudo-headers of a block; each may appear once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Pseudo {
    pub method: Option<Vec<u8>>,
    pub scheme: Option<Vec<u8>>,
    pub authority: Option<Vec<u8>>,
    pub path: Option<Vec<u8>>,
    /// Extended CONNECT (RFC 8441).
    pub protocol: Option<Vec<u8>>,
    pub status: Option<Vec<u8>>,
}

impl Pseudo {
    fn is_empty(&self) -> bool {
        *self == Pseudo::default()
    }

    fn any_of_request(&self) -> bool {
        self.method.is_some()
            || self.scheme.is_some()
            || self.authority.is_some()
            || self.path.is_some()
            || self.protocol.is_some()
    }
}

/// A decoded header block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Fields {
    pub pseudo: Pseudo,
    /// Regular fields, in order.
    pub regular: Vec<(String, Vec<u8>)>,
}

impl Fields {
    /// Sorts HPACK's (name, value) list; an error says why it is not a valid field section.
    pub fn parse(list: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Self, String> {
        let mut fields = Fields::default();
        for (name, value) in list {
            if let Some(pseudo) = name.strip_prefix(b":") {
                if !fields.regular.is_empty() {
                    return Err("a pseudo-header after a regular field".into());
                }
                let p = &mut fields.pseudo;
                let slot = match pseudo {
                    b"method" => &mut p.method,
                    b"scheme" => &mut p.scheme,
                    b"authority" => &mut p.authority,
                    b"path" => &mut p.path,
                    b"protocol" => &mut p.protocol,
                    b"status" => &mut p.status,
                    other => {
                        let other = String::from_utf8_lossy(other);
                        return Err(format!("unknown pseudo-header :{other}"));
                    }
                };
                if slot.replace(value).is_some() {
                    let name = String::from_utf8_lossy(&name);
                    return Err(format!("{name} appears twice"));
                }
            } else {
                let Ok(name) = String::from_utf8(name) else {
                    return Err("a field name that is not UTF-8".into());
                };
                if name.is_empty() {
                    return Err("an empty field name".into());
                }
                fields.regular.push((name, value));
            }
        }
        Ok(fields)
    }

    /// A request's method and target (the path, or the authority of a CONNECT).
    pub fn request_line(&self) -> Result<(String, String), String> {
        let p = &self.pseudo;
        if p.status.is_some() {
            return Err(":status in a request".into());
        }
        let method = text(&p.method, ":method")?;
        if method.is_empty() {
            return Err("an empty :method".into());
        }
        let target = if method == "CONNECT" && p.path.is_none() {
            text(&p.authority, ":authority")?
        } else {
            text(&p.path, ":path")?
        };
        if target.is_empty() {
            return Err("an empty :path".into());
        }
        Ok((method, target))
    }

    /// A response's status code.
    pub fn status(&self) -> Result<u16, String> {
        if self.pseudo.any_of_request() {
            return Err("a request pseudo-header in a response".into());
        }
        let status = text(&self.pseudo.status, ":status")?;
        match status.parse::<u16>() {
            Ok(code) if status.len() == 3 && (100..=999).contains(&code) => Ok(code),
            _ => Err(format!("invalid :status {status:?}")),
        }
    }

    /// Trailers carry no pseudo-headers.
    pub fn check_trailers(&self) -> Result<(), String> {
        if self.pseudo.is_empty() {
            Ok(())
        } else {
            Err("a pseudo-header in trailers".into())
        }
    }

    /// The regular fields; a request's `:authority` comes first as `host` unless a `host`
    /// field is there too, so that HTTP/1.1 and HTTP/2 requests read alike.
    pub fn headers(&self) -> Headers {
        let mut headers = Headers::default();
        if let Some(authority) = &self.pseudo.authority {
            if !self
                .regular
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("host"))
            {
                headers.push("host", authority);
            }
        }
        self.append_to(&mut headers);
        headers
    }

    /// Appends the regular fields (trailers) to `headers`.
    pub fn append_to(&self, headers: &mut Headers) {
        for (name, value) in &self.regular {
            headers.push(name, value);
        }
    }
}

fn text(value: &Option<Vec<u8>>, name: &str) -> Result<String, String> {
    let Some(value) = value else {
        return Err(format!("no {name}"));
    };
    String::from_utf8(value.clone()).map_err(|_| format!("{name} is not UTF-8"))
}
