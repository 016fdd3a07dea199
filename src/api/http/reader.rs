//! A strict single-pass reader for the usual shape of a KServe V2 JSON request: the keys the
//! protocol defines, strings without escapes, flat parameter objects, and tensor data read
//! into little-endian bytes while its array is walked. serde reads a body in two passes over
//! the data (it delimits `data`, then `json::parse` reads the numbers); this reads it in one.
//!
//! Anything else, and every malformed body, is declined (`None`) and left to serde, which
//! also words the errors: this reader only ever decides how fast a body is read, never whether
//! it is accepted or what it means. The tests hold it to that against serde.

use super::infer::{InputHeader, OutputHeader, RequestHeader};
use crate::kserve::json;
use crate::tensor::DataType;
use serde_json::{Map, Number, Value};
use std::borrow::Cow;

/// Nested `data` arrays deeper than this are left to serde (which has its own limit).
const MAX_DEPTH: usize = 32;

/// The request in `json`, or `None` to let serde read it.
pub(super) fn read(json: &[u8]) -> Option<RequestHeader<'_>> {
    let mut reader = Reader { bytes: json, at: 0 };
    let header = reader.request()?;
    reader.skip_whitespace();
    (reader.at == json.len()).then_some(header)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// Where `data` is being read to: the bytes so far, or `None` once the guessed datatype
/// turned out unable to hold an element (the array is still checked to its end).
struct Elements {
    dtype: DataType,
    named: bool,
    out: Option<Vec<u8>>,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    /// Takes `byte` if it comes next, after any whitespace.
    fn eat(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    fn literal(&mut self, word: &str) -> bool {
        let found = self.bytes[self.at..].starts_with(word.as_bytes());
        if found {
            self.at += word.len();
        }
        found
    }

    /// A string without escapes or control characters, borrowed from the body.
    fn string(&mut self) -> Option<&'a str> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.at;
        let length = self.bytes[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        let end = start + length;
        if self.bytes[end] != b'"' {
            return None;
        }
        self.at = end + 1;
        std::str::from_utf8(&self.bytes[start..end]).ok()
    }

    /// A number's text, checked against JSON's grammar.
    fn number(&mut self) -> Option<&'a str> {
        self.skip_whitespace();
        let start = self.at;
        self.at = json::number_end(self.bytes, start)?;
        std::str::from_utf8(&self.bytes[start..self.at]).ok()
    }

    /// An object, calling `member` with each key to read its value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        if !self.eat(b'{') {
            return None;
        }
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let key = self.string()?;
            if !self.eat(b':') {
                return None;
            }
            member(self, key)?;
            if !self.eat(b',') {
                return self.eat(b'}').then_some(());
            }
        }
    }

    /// An array, calling `element` to read each element.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if !self.eat(b'[') {
            return None;
        }
        if self.eat(b']') {
            return Some(());
        }
        loop {
            element(self)?;
            if !self.eat(b',') {
                return self.eat(b']').then_some(());
            }
        }
    }

    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let mut items = Vec::new();
        self.array(|reader| {
            items.push(item(reader)?);
            Some(())
        })?;
        Some(items)
    }

    fn request(&mut self) -> Option<RequestHeader<'a>> {
        let (mut id, mut parameters, mut inputs, mut outputs) = (None, None, None, None);
        // A key seen twice is left to serde, which refuses it.
        self.object(|reader, key| {
            match key {
                "id" if id.is_none() => id = Some(reader.string()?.to_string()),
                "parameters" if parameters.is_none() => parameters = Some(reader.parameters()?),
                "inputs" if inputs.is_none() => inputs = Some(reader.list(Reader::input)?),
                "outputs" if outputs.is_none() => outputs = Some(reader.list(Reader::output)?),
                _ => return None,
            }
            Some(())
        })?;
        Some(RequestHeader {
            id,
            parameters: parameters.unwrap_or_default(),
            inputs: inputs?,
            outputs: outputs.unwrap_or_default(),
        })
    }

    fn input(&mut self) -> Option<InputHeader<'a>> {
        let (mut name, mut shape, mut datatype, mut parameters) = (None, None, None, None);
        let (mut data, mut read) = (None, None);
        self.object(|reader, key| {
            match key {
                "name" if name.is_none() => name = Some(reader.string()?),
                "shape" if shape.is_none() => {
                    shape = Some(reader.list(|r| r.number()?.parse::<i64>().ok())?)
                }
                "datatype" if datatype.is_none() => datatype = Some(reader.string()?),
                "parameters" if parameters.is_none() => parameters = Some(reader.parameters()?),
                "data" if data.is_none() => {
                    // As the datatype named so far, or as FP32, the usual one, when it comes
                    // later; a wrong guess only costs reading the numbers a second time.
                    let named = datatype.and_then(DataType::parse);
                    let mut elements = Elements {
                        dtype: named.unwrap_or(DataType::Fp32),
                        named: named.is_some(),
                        out: Some(Vec::with_capacity(256)),
                    };
                    // BYTES (strings) are left to serde.
                    elements.dtype.element_size()?;
                    reader.skip_whitespace();
                    let start = reader.at;
                    reader.values(&mut elements, 0)?;
                    data = Some(std::str::from_utf8(&reader.bytes[start..reader.at]).ok()?);
                    read = elements.out.map(|bytes| (elements.dtype, bytes));
                }
                _ => return None,
            }
            Some(())
        })?;
        Some(InputHeader {
            name: name?.to_string(),
            shape: shape?,
            datatype: Cow::Borrowed(datatype?),
            parameters: parameters.unwrap_or_default(),
            data,
            read,
        })
    }

    fn output(&mut self) -> Option<OutputHeader> {
        let (mut name, mut parameters) = (None, None);
        self.object(|reader, key| {
            match key {
                "name" if name.is_none() => name = Some(reader.string()?),
                "parameters" if parameters.is_none() => parameters = Some(reader.parameters()?),
                _ => return None,
            }
            Some(())
        })?;
        Some(OutputHeader {
            name: name?.to_string(),
            parameters: parameters.unwrap_or_default(),
        })
    }

    /// A flat object of strings, numbers and booleans.
    fn parameters(&mut self) -> Option<Map<String, Value>> {
        let mut map = Map::new();
        self.object(|reader, key| {
            let value = reader.scalar()?;
            map.insert(key.to_string(), value).is_none().then_some(())
        })?;
        Some(map)
    }

    fn scalar(&mut self) -> Option<Value> {
        self.skip_whitespace();
        Some(match self.peek()? {
            b'"' => Value::String(self.string()?.to_string()),
            b't' if self.literal("true") => Value::Bool(true),
            b'f' if self.literal("false") => Value::Bool(false),
            // serde_json's own reading of the text, so the value is the one serde would give.
            _ => Value::Number(self.number()?.parse::<Number>().ok()?),
        })
    }

    /// An array of elements and nested arrays (the shape says how they nest, not the JSON).
    fn values(&mut self, elements: &mut Elements, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.array(|reader| {
            reader.skip_whitespace();
            match reader.peek()? {
                b'[' => reader.values(elements, depth + 1),
                _ => reader.element(elements),
            }
        })
    }

    fn element(&mut self, elements: &mut Elements) -> Option<()> {
        let token = match self.peek()? {
            b't' if self.literal("true") => "true",
            b'f' if self.literal("false") => "false",
            _ => self.number()?,
        };
        if let Some(out) = &mut elements.out {
            if json::push(out, elements.dtype, token).is_err() {
                // A named datatype that cannot hold it is an error, which serde's path words.
                if elements.named {
                    return None;
                }
                elements.out = None;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests;
