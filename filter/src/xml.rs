//! Streaming rewrite of S3 XML responses, one record at a time.
//!
//! S3's listing and multipart responses are flat: repeated records such as
//! `<Contents>...</Contents>` or `<Part>...</Part>` holding leaf elements.
//! The rewriter hands each complete record to a callback and passes
//! everything else through, holding back only an unfinished record between
//! body pieces, so memory stays at one record whatever the response size.
//! S3 writes these elements without CDATA, and without attributes but for
//! the namespace on a root record (`<CopyObjectResult xmlns="...">`); values
//! are escaped text, which the callbacks treat as opaque except for numbers.

pub struct RecordRewriter {
    records: &'static [&'static str],
    pending: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

impl RecordRewriter {
    pub fn new(records: &'static [&'static str]) -> RecordRewriter {
        RecordRewriter { records, pending: Vec::new() }
    }

    /// Appends to `out` the rewritten form of everything that is complete in
    /// `pending + data`; at `end`, everything.
    pub fn push(&mut self, data: &[u8], end: bool, out: &mut Vec<u8>, rewrite: &mut dyn FnMut(&str, &str) -> Option<String>) {
        self.pending.extend_from_slice(data);
        let buf = std::mem::take(&mut self.pending);
        let mut pos = 0;
        // Next start of each record tag at or after `pos`; `None` once a tag
        // no longer occurs, so each tag's search walks the buffer once.
        // A record opens as `<tag>` or, with attributes, `<tag `.
        let opens: Vec<(String, &str)> = self.records.iter().flat_map(|tag| [(format!("<{tag}>"), *tag), (format!("<{tag} "), *tag)]).collect();
        let mut next_at: Vec<Option<usize>> = opens.iter().map(|(open, _)| find(&buf, open.as_bytes(), 0)).collect();
        loop {
            for (slot, (open, _)) in next_at.iter_mut().zip(&opens) {
                if slot.is_some_and(|at| at < pos) {
                    *slot = find(&buf, open.as_bytes(), pos);
                }
            }
            let next = next_at.iter().zip(opens.iter()).filter_map(|(at, (_, tag))| at.map(|at| (at, *tag))).min_by_key(|(at, _)| *at);
            let Some((start, tag)) = next else {
                // No record starts here; keep back a possibly cut tag at the end.
                let keep_from = if end {
                    buf.len()
                } else {
                    match buf.iter().rposition(|&b| b == b'<') {
                        Some(lt) if lt >= pos && !buf.get(lt..).unwrap_or_default().contains(&b'>') => lt,
                        _ => buf.len(),
                    }
                };
                out.extend_from_slice(buf.get(pos..keep_from).unwrap_or_default());
                self.pending = buf.get(keep_from..).unwrap_or_default().to_vec();
                return;
            };
            out.extend_from_slice(buf.get(pos..start).unwrap_or_default());
            let close = format!("</{tag}>");
            let Some(close_at) = find(&buf, close.as_bytes(), start) else {
                if end {
                    out.extend_from_slice(buf.get(start..).unwrap_or_default());
                } else {
                    self.pending = buf.get(start..).unwrap_or_default().to_vec();
                }
                return;
            };
            let record_end = close_at + close.len();
            let record = buf.get(start..record_end).unwrap_or_default();
            match std::str::from_utf8(record).ok().and_then(|text| rewrite(tag, text)) {
                Some(new) => out.extend_from_slice(new.as_bytes()),
                None => out.extend_from_slice(record),
            }
            pos = record_end;
        }
    }
}

/// Undoes the five predefined XML entities (all S3 uses in these responses).
pub fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// The text of the first `<tag>...</tag>` in `record`.
pub fn element_text<'a>(record: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = record.find(&open)? + open.len();
    let end = record.get(start..)?.find(&format!("</{tag}>"))? + start;
    record.get(start..end)
}

/// `record` with the text of its first `<tag>` replaced.
pub fn replace_element_text(record: &str, tag: &str, text: &str) -> String {
    let open = format!("<{tag}>");
    let Some(start) = record.find(&open).map(|i| i + open.len()) else {
        return record.to_owned();
    };
    let Some(end) = record.get(start..).and_then(|r| r.find(&format!("</{tag}>"))).map(|i| i + start) else {
        return record.to_owned();
    };
    format!("{}{}{}", record.get(..start).unwrap_or_default(), text, record.get(end..).unwrap_or_default())
}

/// `record` without any `<tag>...</tag>` whose tag starts with `prefix`
/// (e.g. "Checksum" drops ChecksumCRC32, ChecksumSHA256, ...).
pub fn remove_elements(record: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(record.len());
    let mut rest = record;
    let open = format!("<{prefix}");
    while let Some(at) = rest.find(&open) {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let name_end = from.find('>').unwrap_or(from.len());
        let name = from.get(1..name_end).unwrap_or_default();
        let close = format!("</{name}>");
        match from.find(&close) {
            Some(c) if !name.contains('/') && !name.contains(' ') => rest = from.get(c + close.len()..).unwrap_or_default(),
            _ => {
                out.push_str(from.get(..1).unwrap_or_default());
                rest = from.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const LISTING: &str = "<?xml version=\"1.0\"?><ListBucketResult><Name>b</Name><Contents><Key>a</Key><Size>41</Size></Contents><Contents><Key>b&amp;c</Key><Size>7</Size></Contents><IsTruncated>false</IsTruncated></ListBucketResult>";

    fn shrink(_tag: &str, record: &str) -> Option<String> {
        let size: u64 = element_text(record, "Size")?.parse().ok()?;
        Some(replace_element_text(record, "Size", &(size / 2).to_string()))
    }

    #[test]
    fn rewrites_records_at_any_split() {
        let want = LISTING.replace("<Size>41</Size>", "<Size>20</Size>").replace("<Size>7</Size>", "<Size>3</Size>");
        for split in 0..LISTING.len() {
            for second in split..LISTING.len() {
                let mut rw = RecordRewriter::new(&["Contents"]);
                let mut out = Vec::new();
                rw.push(&LISTING.as_bytes()[..split], false, &mut out, &mut shrink);
                rw.push(&LISTING.as_bytes()[split..second], false, &mut out, &mut shrink);
                rw.push(&LISTING.as_bytes()[second..], true, &mut out, &mut shrink);
                assert_eq!(String::from_utf8(out).unwrap(), want, "split {split}/{second}");
            }
        }
    }

    #[test]
    fn a_root_record_with_a_namespace_is_rewritten_at_any_split() {
        // What S3 answers to CopyObject and CompleteMultipartUpload.
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CopyObjectResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><ETag>\"x\"</ETag><Size>8</Size></CopyObjectResult>";
        let want = body.replace("<Size>8</Size>", "<Size>4</Size>");
        for split in 0..body.len() {
            let mut rw = RecordRewriter::new(&["CopyObjectResult"]);
            let mut out = Vec::new();
            rw.push(&body.as_bytes()[..split], false, &mut out, &mut shrink);
            rw.push(&body.as_bytes()[split..], true, &mut out, &mut shrink);
            assert_eq!(String::from_utf8(out).unwrap(), want, "split {split}");
        }
        // A longer element name that starts with the record's is no record.
        let mut rw = RecordRewriter::new(&["Part"]);
        let mut out = Vec::new();
        let other = "<PartNumber>2</PartNumber><Parts x=\"1\"><Size>8</Size></Parts>";
        rw.push(other.as_bytes(), true, &mut out, &mut shrink);
        assert_eq!(String::from_utf8(out).unwrap(), other);
    }

    #[test]
    fn element_helpers() {
        let r = "<Part><PartNumber>1</PartNumber><ETag>\"x\"</ETag><ChecksumCRC32>AAAA</ChecksumCRC32><Size>9</Size></Part>";
        assert_eq!(element_text(r, "Size"), Some("9"));
        assert_eq!(element_text(r, "Nope"), None);
        assert_eq!(remove_elements(r, "Checksum"), "<Part><PartNumber>1</PartNumber><ETag>\"x\"</ETag><Size>9</Size></Part>");
        assert_eq!(replace_element_text(r, "Size", "3"), r.replace("<Size>9<", "<Size>3<"));
    }
}
