//! The few proxy-wasm host calls the filter makes, returning `Result` on
//! every status. The SDK's own `hostcalls` panic on unexpected statuses (and
//! on non-UTF-8 header values), and a panic kills the VM, so the filter
//! declares the ABI imports itself. ABI: proxy-wasm 0.2.1, as Envoy exports it.

use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, StreamType};
use std::ptr::{null, null_mut};

/// A non-OK proxy-wasm status, kept as the raw number for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

// The ABI numbers, taken from the SDK's enums so they cannot drift.
pub const REQUEST_HEADERS: u32 = MapType::HttpRequestHeaders as u32;
pub const RESPONSE_HEADERS: u32 = MapType::HttpResponseHeaders as u32;
pub const CALL_RESPONSE_HEADERS: u32 = MapType::HttpCallResponseHeaders as u32;
pub const REQUEST_BODY: u32 = BufferType::HttpRequestBody as u32;
pub const RESPONSE_BODY: u32 = BufferType::HttpResponseBody as u32;
pub const CALL_RESPONSE_BODY: u32 = BufferType::HttpCallResponseBody as u32;
const PLUGIN_CONFIGURATION: u32 = BufferType::PluginConfiguration as u32;
const STREAM_HTTP_REQUEST: u32 = StreamType::HttpRequest as u32;
const STREAM_HTTP_RESPONSE: u32 = StreamType::HttpResponse as u32;
const METRIC_COUNTER: u32 = MetricType::Counter as u32;

pub const LOG_INFO: u32 = LogLevel::Info as u32;
pub const LOG_WARN: u32 = LogLevel::Warn as u32;
pub const LOG_ERROR: u32 = LogLevel::Error as u32;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_buffer_bytes(buffer_type: u32, start: usize, max_size: usize, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_set_buffer_bytes(buffer_type: u32, start: usize, size: usize, data: *const u8, data_size: usize) -> u32;
    fn proxy_get_header_map_pairs(map_type: u32, return_data: *mut *mut u8, return_size: *mut usize) -> u32;
    fn proxy_replace_header_map_value(map_type: u32, key_data: *const u8, key_size: usize, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_define_metric(metric_type: u32, name_data: *const u8, name_size: usize, return_id: *mut u32) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
}

fn check(status: u32) -> Result<(), HostError> {
    if status == OK {
        Ok(())
    } else {
        Err(HostError(status))
    }
}

/// Takes ownership of a host-allocated buffer (allocated through the SDK's
/// `proxy_on_memory_allocate`, i.e. this module's global allocator).
unsafe fn take_host_bytes(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(data, size, size)
    }
}

pub fn log(level: u32, message: &str) {
    // Nothing sensible to do if logging itself fails.
    let _ = unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

pub fn get_buffer(buffer_type: u32, start: usize, max_size: usize) -> Result<Vec<u8>, HostError> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let status = unsafe { proxy_get_buffer_bytes(buffer_type, start, max_size, &mut data, &mut size) };
    match status {
        OK => Ok(unsafe { take_host_bytes(data, size) }),
        NOT_FOUND => Ok(Vec::new()),
        other => Err(HostError(other)),
    }
}

pub fn plugin_configuration() -> Result<Vec<u8>, HostError> {
    get_buffer(PLUGIN_CONFIGURATION, 0, usize::MAX)
}

/// Replaces `[start, start + size)` of a body buffer with `data`.
pub fn set_buffer(buffer_type: u32, start: usize, size: usize, data: &[u8]) -> Result<(), HostError> {
    check(unsafe { proxy_set_buffer_bytes(buffer_type, start, size, data.as_ptr(), data.len()) })
}

/// All headers of a map; values that are not UTF-8 become lossy strings
/// (the filter only acts on ASCII headers, and never forwards these copies).
pub fn get_headers(map_type: u32) -> Result<Vec<(String, String)>, HostError> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    check(unsafe { proxy_get_header_map_pairs(map_type, &mut data, &mut size) })?;
    let bytes = unsafe { take_host_bytes(data, size) };
    decode_pairs(&bytes).ok_or(HostError(u32::MAX))
}

/// Decodes the proxy-wasm map serialisation: count (u32 LE), then (key size,
/// value size) pairs (u32 LE each), then each key and value NUL-terminated.
fn decode_pairs(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let read_u32 = |at: usize| -> Option<usize> { bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes).map(|v| v as usize) };
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = read_u32(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let at = 4 + i * 8;
        sizes.push((read_u32(at)?, read_u32(at + 4)?));
    }
    let mut at = 4 + count * 8;
    let mut pairs = Vec::with_capacity(sizes.len());
    for (key_size, value_size) in sizes {
        let key = bytes.get(at..at + key_size)?;
        at += key_size + 1;
        let value = bytes.get(at..at + value_size)?;
        at += value_size + 1;
        pairs.push((String::from_utf8_lossy(key).into_owned(), String::from_utf8_lossy(value).into_owned()));
    }
    Some(pairs)
}

// wasm32 has 32-bit usize: these lengths always fit u32.
#[allow(clippy::cast_possible_truncation)]
fn encode_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

pub fn set_header(map_type: u32, name: &str, value: &str) -> Result<(), HostError> {
    check(unsafe { proxy_replace_header_map_value(map_type, name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

pub fn remove_header(map_type: u32, name: &str) -> Result<(), HostError> {
    check(unsafe { proxy_remove_header_map_value(map_type, name.as_ptr(), name.len()) })
}

pub fn send_local_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
    let headers = encode_pairs(headers);
    check(unsafe { proxy_send_local_response(status, null(), 0, body.as_ptr(), body.len(), headers.as_ptr(), headers.len(), -1) })
}

pub fn reset_request() -> Result<(), HostError> {
    check(unsafe { proxy_close_stream(STREAM_HTTP_REQUEST) })
}

/// Sets a property of the stream; Envoy keeps `name` as filter state
/// `wasm.<name>`, which the access log can print.
pub fn set_property(name: &str, value: &str) -> Result<(), HostError> {
    check(unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

pub fn resume_request() -> Result<(), HostError> {
    check(unsafe { proxy_continue_stream(STREAM_HTTP_REQUEST) })
}

pub fn resume_response() -> Result<(), HostError> {
    check(unsafe { proxy_continue_stream(STREAM_HTTP_RESPONSE) })
}

/// An HTTP call to an Envoy cluster. This one goes through the SDK, which
/// must register the call to route its response back to this context; the
/// SDK returns the statuses Envoy can give (Ok, BadArgument, InternalFailure)
/// as values.
pub fn dispatch(cluster: &str, headers: &[(String, String)], timeout: std::time::Duration) -> Result<u32, HostError> {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    proxy_wasm::hostcalls::dispatch_http_call(cluster, headers, None, vec![], timeout).map_err(|s| HostError(s as u32))
}

pub fn dispatch_with_body(cluster: &str, headers: &[(String, String)], body: &[u8], timeout: std::time::Duration) -> Result<u32, HostError> {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    proxy_wasm::hostcalls::dispatch_http_call(cluster, headers, Some(body), vec![], timeout).map_err(|s| HostError(s as u32))
}

/// Root context timer; zero stops it.
pub fn set_tick_period(period: std::time::Duration) -> Result<(), HostError> {
    check(unsafe { proxy_set_tick_period_milliseconds(u32::try_from(period.as_millis()).unwrap_or(u32::MAX)) })
}

pub fn reset_response() -> Result<(), HostError> {
    check(unsafe { proxy_close_stream(STREAM_HTTP_RESPONSE) })
}

pub fn define_counter(name: &str) -> Result<u32, HostError> {
    let mut id = 0u32;
    check(unsafe { proxy_define_metric(METRIC_COUNTER, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment(id: u32, by: u64) {
    let _ = unsafe { proxy_increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX)) };
}
