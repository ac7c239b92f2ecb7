//! Parsing measured alone: the CSV plugin through the `sluice` library's
//! plugin API against the `csv` crate on the same bytes. Also builds the
//! exact requests sluice sends, for the wire-limit client.

use std::path::Path;
use std::time::{Duration, Instant};

use sluice::plugin::{Parsed, Plugin, PluginLimits, Record};

/// Bytes per `feed` call, as the host's default `input.chunk_size`.
pub const CHUNK: usize = 64 * 1024;

/// Loads and configures the CSV plugin with `config`.
///
/// # Errors
///
/// Fails when the plugin cannot be loaded or rejects the configuration.
pub fn load_plugin(path: &Path, config: &[(String, String)]) -> anyhow::Result<Plugin> {
    let mut plugin = Plugin::load(path, PluginLimits::default())?;
    plugin.configure(config.to_vec())?;
    Ok(plugin)
}

/// Parses `bytes` through a fresh plugin instance, feeding 64 KiB chunks
/// and then finishing, and returns the records parsed and the time taken.
///
/// # Errors
///
/// Fails when the plugin traps or reports a malformed record.
pub fn through_plugin(plugin: &Plugin, bytes: &[u8]) -> anyhow::Result<(u64, Duration)> {
    let mut parser = plugin.instantiate()?.parser()?;
    let started = Instant::now();
    let mut records = 0;
    for chunk in bytes.chunks(CHUNK) {
        records += count(parser.feed(chunk)?)?;
    }
    records += count(parser.finish()?)?;
    Ok((records, started.elapsed()))
}

fn count(parsed: Vec<Parsed>) -> anyhow::Result<u64> {
    let mut records = 0;
    for item in parsed {
        match item {
            Parsed::Record(_) => records += 1,
            Parsed::Malformed(malformed) => anyhow::bail!(
                "record {} is malformed: {}",
                malformed.position.record_number,
                malformed.message
            ),
        }
    }
    Ok(records)
}

/// Parses `bytes` with the `csv` crate into reused byte records and returns
/// the records parsed and the time taken.
///
/// # Errors
///
/// Fails when the bytes are not valid CSV.
pub fn native(bytes: &[u8]) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut reader = csv::Reader::from_reader(bytes);
    let mut record = csv::ByteRecord::new();
    let mut records = 0;
    while reader.read_byte_record(&mut record)? {
        records += 1;
    }
    Ok((records, started.elapsed()))
}

/// One request as sluice sends it, ready to send again and again.
#[derive(Clone)]
pub struct WireRequest {
    pub method: reqwest::Method,
    pub url: reqwest::Url,
    /// The same URL, parsed for hyper.
    pub uri: hyper::Uri,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

/// Parses and maps every record through the plugin, as a run does, and
/// returns the requests with the run's base URL and an idempotency key of
/// the same form as sluice's (32 hex digits, a dash and the record number).
///
/// # Errors
///
/// Fails when the plugin traps, a record is malformed or unmappable, or a
/// request has an invalid method, path or header.
pub fn requests(plugin: &Plugin, bytes: &[u8], base: &str) -> anyhow::Result<Vec<WireRequest>> {
    let mut parser = plugin.instantiate()?.parser()?;
    let mut records: Vec<Record> = Vec::new();
    let mut out = Vec::new();
    let chunks = bytes.chunks(CHUNK).map(Some).chain([None]);
    for chunk in chunks {
        let parsed = match chunk {
            Some(chunk) => parser.feed(chunk)?,
            None => parser.finish()?,
        };
        records.clear();
        for item in parsed {
            match item {
                Parsed::Record(record) => records.push(record),
                Parsed::Malformed(malformed) => anyhow::bail!(
                    "record {} is malformed: {}",
                    malformed.position.record_number,
                    malformed.message
                ),
            }
        }
        for (record, mapped) in records.iter().zip(parser.map(&records)?) {
            let request = mapped.map_err(|message| {
                anyhow::anyhow!(
                    "record {} cannot be mapped: {message}",
                    record.position.record_number
                )
            })?;
            let mut headers = reqwest::header::HeaderMap::new();
            for header in request.headers {
                headers.insert(
                    reqwest::header::HeaderName::from_bytes(header.name.as_bytes())?,
                    reqwest::header::HeaderValue::from_str(&header.value)?,
                );
            }
            let key = format!(
                "{:032x}-{}",
                0x5eed_u128 << 64 | u128::from(record.position.record_number),
                record.position.record_number
            );
            headers.insert("idempotency-key", key.parse()?);
            let url = format!("{base}{}", request.path);
            out.push(WireRequest {
                method: request.method.parse()?,
                uri: url.parse()?,
                url: url.parse()?,
                headers,
                body: request.body.into(),
            });
        }
    }
    Ok(out)
}
