//! Memory-mapped safetensors: one file or a sharded set, validated before any tensor is handed out.
//!
//! Layout of a file: `u64` little-endian header length `N`, `N` bytes of JSON header, then the data
//! section. The header maps each tensor name to `{dtype, shape, data_offsets: [begin, end]}` (offsets
//! relative to the data section) plus an optional `__metadata__` string map.
//!
//! The file is hostile until validated. [`SafeTensors::open`] parses the header itself with serde_json
//! (so that duplicate names are seen and every defect gets its own [`Error`] variant) and checks:
//! header length within the file, a JSON object header, known dtypes (parsed by the `safetensors`
//! crate's `Dtype`), no duplicate names, `begin <= end`, `shape x dtype size == end - begin`, and that
//! the tensors tile the data section exactly (no overlap, no gap, not truncated, no trailing bytes).
//!
//! No weight is copied when opening: the file is memory-mapped and [`SafeTensors::get`] returns a
//! [`Tensor`] that views the map. Only when a tensor's bytes are not aligned for its dtype (a header
//! length that is not a multiple of 8, say) does `get` fall back to an aligned owned copy (made once and
//! cached); it never casts unaligned bytes. [`Tensor::is_mapped`] tells which one you got.
//!
//! # Files changing underneath a loaded model
//!
//! A mapped file must not change while the model is loaded. What happens when it does (tested in
//! `engine/tests/reliability_files.rs`):
//!
//! - **Replaced by rename** (write a new file, then `rename` it over the old name — what `cp` to a temp
//!   name + `mv`, `huggingface-cli`, `safetensors.save_file` to a temp path, etc. do): harmless. The map
//!   holds the old inode, which lives until the model is dropped; generation gives the same tokens as
//!   before. The new file is seen only by the next load.
//! - **Truncated in place** (`truncate`, `open(..., "w")`, `cp` over the same name): the pages past the
//!   new end are gone, and the next read of them raises `SIGBUS`, which kills the process (Rust cannot
//!   turn it into an error). It is never silent wrong output: the process dies with signal 7.
//! - **Rewritten in place without truncation** (`dd conv=notrunc`, writing through another map): the
//!   new bytes are read as weights (shared mapping), so outputs change. Do not do this to a model in use.
//!
//! Deployments that must survive in-place rewrites should copy the model directory first (or load from a
//! read-only location); copying costs the model's size in memory, so it is not the default.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::tensor::Storage;
use crate::{Dtype, Error, Result, Tensor};

/// The largest header accepted (the `safetensors` crate's own limit).
pub const MAX_HEADER_LEN: u64 = 100_000_000;
/// Bytes of the little-endian `u64` header length at the start of a file.
const HEADER_LEN_BYTES: u64 = 8;
/// The file names `open_dir` looks for.
pub const SINGLE_FILE_NAME: &str = "model.safetensors";
pub const INDEX_FILE_NAME: &str = "model.safetensors.index.json";

/// One opened and validated `.safetensors` file.
struct Shard {
    path: PathBuf,
    storage: Arc<Storage>,
    metadata: Option<HashMap<String, String>>,
}

/// Where one tensor lives, as validated from the header.
struct Entry {
    shard: usize,
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    /// Absolute byte offsets in the file (header included).
    begin: usize,
    end: usize,
    /// The aligned owned copy, made on first `get` when the mapped bytes are misaligned.
    copy: OnceLock<Tensor>,
}

/// A validated, memory-mapped safetensors file or sharded set. `Send + Sync`; tensors share the maps.
pub struct SafeTensors {
    /// The file, or the index for a sharded set: named in errors about the set as a whole.
    source: PathBuf,
    shards: Vec<Shard>,
    entries: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for SafeTensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeTensors")
            .field("source", &self.source)
            .field("n_shards", &self.shards.len())
            .field("n_tensors", &self.entries.len())
            .finish()
    }
}

impl SafeTensors {
    /// Open one `.safetensors` file: memory-map it and validate its header and layout.
    pub fn open(path: &Path) -> Result<Self> {
        let (shard, infos) = open_shard(path)?;
        let entries = infos
            .into_iter()
            .map(|(name, info)| (name, info.into_entry(0)))
            .collect();
        Ok(SafeTensors {
            source: path.to_path_buf(),
            shards: vec![shard],
            entries,
        })
    }

    /// Open `dir/model.safetensors` if present, else the sharded set of
    /// `dir/model.safetensors.index.json` (the order transformers' `from_pretrained` looks in).
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join(SINGLE_FILE_NAME);
        if single.is_file() {
            return Self::open(&single);
        }
        let index = dir.join(INDEX_FILE_NAME);
        if index.is_file() {
            return Self::open_index(&index);
        }
        Err(Error::NoWeights { dir: dir.to_path_buf() })
    }

    /// Open a sharded set from its `model.safetensors.index.json` (`{"metadata": {..}, "weight_map":
    /// {tensor: shard file}}`). Shard names must be plain file names beside the index; every tensor must
    /// be in the shard the index names, and every tensor of a shard must be listed.
    pub fn open_index(index_path: &Path) -> Result<Self> {
        let text = std::fs::read(index_path).map_err(|source| Error::Io {
            path: index_path.to_path_buf(),
            source,
        })?;
        let weight_map = parse_index(index_path, &text)?;
        let dir = index_path.parent().unwrap_or(Path::new("."));

        // Open each distinct shard once, in name order.
        let shard_names: Vec<&str> = {
            let set: std::collections::BTreeSet<&str> = weight_map.values().map(String::as_str).collect();
            set.into_iter().collect()
        };
        let mut shards = Vec::with_capacity(shard_names.len());
        let mut entries = BTreeMap::new();
        // Open (and validate) every shard first: a missing or broken file is reported as such.
        let opened = shard_names
            .iter()
            .map(|shard_name| open_shard(&dir.join(shard_name)))
            .collect::<Result<Vec<_>>>()?;
        for (s, (shard_name, (shard, infos))) in shard_names.iter().zip(opened).enumerate() {
            for (name, info) in infos {
                match weight_map.get(&name) {
                    Some(listed) if listed == shard_name => {}
                    Some(listed) => {
                        return Err(Error::IndexMismatch {
                            path: index_path.to_path_buf(),
                            name,
                            expected: listed.clone(),
                            found: format!("it is (also) in {shard_name:?}"),
                        })
                    }
                    None => {
                        return Err(Error::IndexMismatch {
                            path: index_path.to_path_buf(),
                            name,
                            expected: "<none: not in weight_map>".into(),
                            found: format!("it is in {shard_name:?}"),
                        })
                    }
                }
                entries.insert(name, info.into_entry(s));
            }
            shards.push(shard);
        }
        // Every listed tensor must have been found in its shard.
        if let Some((name, shard_name)) = weight_map.iter().find(|(name, _)| !entries.contains_key(*name)) {
            return Err(Error::IndexMismatch {
                path: index_path.to_path_buf(),
                name: name.clone(),
                expected: shard_name.clone(),
                found: "that shard does not hold it".into(),
            });
        }
        Ok(SafeTensors {
            source: index_path.to_path_buf(),
            shards,
            entries,
        })
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The file this set was opened from (the index for a sharded set).
    pub fn path(&self) -> &Path {
        &self.source
    }

    /// The shard files, in order.
    pub fn shard_paths(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// The `__metadata__` map of the first file, if it has one.
    pub fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.shards.first().and_then(|s| s.metadata.as_ref())
    }

    /// The stored dtype name (`"F32"`, `"I64"`, ...) and shape of a tensor, without building a view.
    pub fn info(&self, name: &str) -> Option<(String, &[usize])> {
        self.entries
            .get(name)
            .map(|e| (e.dtype.to_string(), e.shape.as_slice()))
    }

    /// The tensor, as a zero-copy view of the map when its bytes are aligned for its dtype (else an
    /// aligned copy, made once). Errors: [`Error::MissingTensor`], [`Error::UnsupportedDtype`].
    pub fn get(&self, name: &str) -> Result<Tensor> {
        let Some(entry) = self.entries.get(name) else {
            return Err(Error::MissingTensor {
                path: self.source.clone(),
                name: name.to_string(),
                hint: self.missing_hint(name),
            });
        };
        let shard = &self.shards[entry.shard];
        let dtype = loadable_dtype(entry.dtype).ok_or_else(|| Error::UnsupportedDtype {
            path: shard.path.clone(),
            name: name.to_string(),
            dtype: entry.dtype.to_string(),
        })?;
        if let Some(t) = entry.copy.get() {
            return Ok(t.clone());
        }
        // Bounds, size and alignment were validated at open; a broken invariant is still an error here.
        let bytes = shard.storage.bytes().get(entry.begin..entry.end).unwrap_or_default();
        let tensor = if (bytes.as_ptr() as usize).is_multiple_of(dtype.size()) {
            // Aligned: a zero-copy view of the map.
            Tensor::from_storage(
                name,
                dtype,
                entry.shape.clone(),
                shard.storage.clone(),
                entry.begin..entry.end,
            )
        } else {
            // Misaligned in the file: the documented fallback, an aligned owned copy (made once, cached).
            Tensor::from_bytes(name, dtype, entry.shape.clone(), bytes).map(|t| entry.copy.get_or_init(|| t).clone())
        };
        tensor.ok_or_else(|| Error::TensorSize {
            path: shard.path.clone(),
            name: name.to_string(),
            dtype: entry.dtype.to_string(),
            shape: entry.shape.clone(),
            expected: entry
                .shape
                .iter()
                .try_fold(dtype.size() as u64, |a, &d| a.checked_mul(d as u64))
                .unwrap_or(u64::MAX),
            found: bytes.len() as u64,
        })
    }

    /// [`get`](Self::get), then check the shape: [`Error::TensorShape`] names expected vs found.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get(name)?;
        if t.shape() != shape {
            return Err(Error::TensorShape {
                path: self.shard_path_of(name),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.shape().to_vec(),
            });
        }
        Ok(t)
    }

    fn shard_path_of(&self, name: &str) -> PathBuf {
        match self.entries.get(name) {
            Some(e) => self.shards[e.shard].path.clone(),
            None => self.source.clone(),
        }
    }

    /// A short "did you mean" for a missing tensor: names that contain it or that it contains.
    fn missing_hint(&self, name: &str) -> String {
        let close: Vec<&str> = self
            .entries
            .keys()
            .map(String::as_str)
            .filter(|k| !name.is_empty() && (k.ends_with(name) || name.ends_with(*k)))
            .take(3)
            .collect();
        if close.is_empty() {
            format!(" ({} tensors in the file)", self.entries.len())
        } else {
            format!(" (did you mean {close:?}?)")
        }
    }
}

/// The loadable dtypes; `None` for the others (known to safetensors but not to [`Tensor`]).
fn loadable_dtype(d: safetensors::Dtype) -> Option<Dtype> {
    match d {
        safetensors::Dtype::F32 => Some(Dtype::F32),
        safetensors::Dtype::F16 => Some(Dtype::F16),
        safetensors::Dtype::BF16 => Some(Dtype::BF16),
        safetensors::Dtype::I8 => Some(Dtype::I8),
        safetensors::Dtype::U8 => Some(Dtype::U8),
        _ => None,
    }
}

/// The safetensors dtype of `d` (`None` for GGUF blocks, which safetensors has no dtype for).
fn to_st_dtype(d: Dtype) -> Option<safetensors::Dtype> {
    match d {
        Dtype::F32 => Some(safetensors::Dtype::F32),
        Dtype::F16 => Some(safetensors::Dtype::F16),
        Dtype::BF16 => Some(safetensors::Dtype::BF16),
        Dtype::I8 => Some(safetensors::Dtype::I8),
        Dtype::U8 => Some(safetensors::Dtype::U8),
        Dtype::Blocks(_) => None,
    }
}

/// A tensor as validated from the header (offsets absolute in the file).
struct Info {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
}

impl Info {
    fn into_entry(self, shard: usize) -> Entry {
        Entry {
            shard,
            dtype: self.dtype,
            shape: self.shape,
            begin: self.begin,
            end: self.end,
            copy: OnceLock::new(),
        }
    }
}

/// Map and validate one file.
fn open_shard(path: &Path) -> Result<(Shard, Vec<(String, Info)>)> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    if meta.len() == 0 {
        return Err(Error::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    // SAFETY: the map is read-only and private to this process; the file is a regular file we just
    // opened. Another process changing the file while it is mapped is outside Rust's model (as for every
    // mmap loader); model files are treated as immutable while loaded (see the module docs).
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    let (infos, metadata) = parse_header(path, &mmap)?;
    let shard = Shard {
        path: path.to_path_buf(),
        storage: Arc::new(Storage::Mmap(mmap)),
        metadata,
    };
    Ok((shard, infos))
}

/// A JSON object read as its entries in order, duplicate keys kept (a map would drop them).
struct Entries<V>(Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Vis<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Entries<V>, A::Error> {
                let mut v = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
                while let Some(kv) = map.next_entry::<String, V>()? {
                    v.push(kv);
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(Vis(std::marker::PhantomData))
    }
}

/// One header entry as written: offsets are checked as u64 before any arithmetic; the dtype is
/// kept as a string so that an unknown one gets its own error. Duplicate fields are rejected.
#[derive(Deserialize)]
struct RawInfo {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

enum HeaderItem {
    Metadata(HashMap<String, String>),
    Tensor(RawInfo),
}

/// The header object, entries in order with duplicate names kept, each value typed by its key.
struct RawHeader(Vec<(String, HeaderItem)>);

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Vis;
        impl<'de> Visitor<'de> for Vis {
            type Value = RawHeader;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object of tensors")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<RawHeader, A::Error> {
                use serde::de::Error as _;
                let mut v = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
                while let Some(name) = map.next_key::<String>()? {
                    let item = if name == "__metadata__" {
                        HeaderItem::Metadata(map.next_value().map_err(|e| {
                            A::Error::custom(format!("__metadata__ is not a map of strings to strings: {e}"))
                        })?)
                    } else {
                        HeaderItem::Tensor(map.next_value().map_err(|e| {
                            A::Error::custom(format!(
                                "tensor {name:?}: expected {{\"dtype\": str, \"shape\": [uint], \"data_offsets\": \
                                 [uint, uint]}}: {e}"
                            ))
                        })?)
                    };
                    v.push((name, item));
                }
                Ok(RawHeader(v))
            }
        }
        d.deserialize_map(Vis)
    }
}

/// Parse and validate the header of a file whose bytes are `buf`: every check of the module docs.
/// Returns the tensors (offsets absolute in `buf`) and the `__metadata__` map.
#[allow(clippy::type_complexity)]
fn parse_header(path: &Path, buf: &[u8]) -> Result<(Vec<(String, Info)>, Option<HashMap<String, String>>)> {
    let path_buf = || path.to_path_buf();
    let file_len = buf.len() as u64;
    if file_len == 0 {
        return Err(Error::EmptyFile { path: path_buf() });
    }
    let Some(len_bytes) = buf.get(..HEADER_LEN_BYTES as usize) else {
        return Err(Error::Truncated {
            path: path_buf(),
            expected: HEADER_LEN_BYTES,
            found: file_len,
        });
    };
    let mut n_bytes = [0u8; 8];
    n_bytes.copy_from_slice(len_bytes);
    let header_len = u64::from_le_bytes(n_bytes);
    let max = (file_len - HEADER_LEN_BYTES).min(MAX_HEADER_LEN);
    if header_len > max {
        return Err(Error::HeaderLength {
            path: path_buf(),
            header_len,
            max,
        });
    }
    let data_start = HEADER_LEN_BYTES + header_len;
    let header = &buf[HEADER_LEN_BYTES as usize..data_start as usize];
    let invalid = |reason: String| Error::InvalidHeader {
        path: path_buf(),
        reason,
    };
    if header.first() != Some(&b'{') {
        return Err(invalid(format!(
            "the {header_len}-byte header does not start with '{{' (found {:?})",
            header.first().map(|&b| b as char)
        )));
    }
    let RawHeader(raw) = serde_json::from_slice(header).map_err(|e| invalid(format!("not a header: {e}")))?;

    // Each entry: name unique, dtype known, offsets ordered, byte size = shape x dtype size.
    let data_len = file_len - data_start;
    let mut seen = HashSet::with_capacity(raw.len());
    let mut metadata = None;
    let mut infos: Vec<(String, safetensors::Dtype, Vec<usize>, u64, u64)> = Vec::with_capacity(raw.len());
    for (name, item) in raw {
        if !seen.insert(name.clone()) {
            return Err(Error::DuplicateTensor { path: path_buf(), name });
        }
        let info = match item {
            HeaderItem::Metadata(m) => {
                metadata = Some(m);
                continue;
            }
            HeaderItem::Tensor(info) => info,
        };
        let dtype: safetensors::Dtype =
            serde_json::from_value(Value::String(info.dtype.clone())).map_err(|_| Error::UnknownDtype {
                path: path_buf(),
                name: name.clone(),
                dtype: info.dtype.clone(),
            })?;
        let (begin, end) = info.data_offsets;
        if begin > end {
            return Err(Error::InvalidOffsets {
                path: path_buf(),
                name,
                begin,
                end,
            });
        }
        let n_bits = info
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .and_then(|n| n.checked_mul(dtype.bitsize() as u64));
        let Some(n_bits) = n_bits else {
            return Err(Error::ShapeOverflow {
                path: path_buf(),
                name,
                shape: info.shape,
            });
        };
        let found = end - begin;
        if n_bits % 8 != 0 || n_bits / 8 != found {
            return Err(Error::TensorSize {
                path: path_buf(),
                name,
                dtype: dtype.to_string(),
                shape: info.shape,
                expected: n_bits.div_ceil(8),
                found,
            });
        }
        infos.push((name, dtype, info.shape, begin, end));
    }

    // Layout: sorted by offset, the tensors must tile [0, data_len) exactly.
    infos.sort_by(|a, b| (a.3, a.4, &a.0).cmp(&(b.3, b.4, &b.0)));
    let mut cursor = 0u64;
    let mut prev = "<start of data>".to_string();
    let mut defect = None;
    for (name, _, _, begin, end) in &infos {
        if *begin < cursor && defect.is_none() {
            defect = Some(Error::TensorOverlap {
                path: path_buf(),
                first: prev.clone(),
                second: name.clone(),
                first_end: cursor,
                second_begin: *begin,
            });
        } else if *begin > cursor && defect.is_none() {
            defect = Some(Error::TensorGap {
                path: path_buf(),
                after: if prev.starts_with('<') {
                    prev.clone()
                } else {
                    format!("tensor {prev:?}")
                },
                before: name.clone(),
                begin: cursor,
                end: *begin,
            });
        }
        if *end >= cursor {
            cursor = *end;
            prev = name.clone();
        }
    }
    let data_end = cursor;
    let out_of_bounds = infos.iter().find(|i| i.4 > data_len);
    match (defect, out_of_bounds) {
        // A tensor pointing outside the file in a layout that is not contiguous anyway: name it.
        (Some(_), Some((name, _, _, begin, end))) => {
            return Err(Error::TensorOutOfBounds {
                path: path_buf(),
                name: name.clone(),
                begin: *begin,
                end: *end,
                data_len,
            })
        }
        (Some(defect), None) => return Err(defect),
        // A well-formed layout that runs past the end of the file: the file was cut short.
        (None, Some(_)) => {
            return Err(Error::Truncated {
                path: path_buf(),
                expected: data_start.saturating_add(data_end),
                found: file_len,
            })
        }
        (None, None) if data_end < data_len => {
            return Err(Error::TrailingData {
                path: path_buf(),
                data_end,
                data_len,
            })
        }
        (None, None) => {}
    }

    // All offsets are now within the file, so these conversions and sums cannot overflow.
    let tensors = infos
        .into_iter()
        .map(|(name, dtype, shape, begin, end)| {
            let info = Info {
                dtype,
                shape,
                begin: (data_start + begin) as usize,
                end: (data_start + end) as usize,
            };
            (name, info)
        })
        .collect();
    Ok((tensors, metadata))
}

/// Parse `model.safetensors.index.json`: the `weight_map` (tensor -> shard file), duplicates and
/// unsafe shard names rejected.
fn parse_index(path: &Path, text: &[u8]) -> Result<BTreeMap<String, String>> {
    let invalid = |reason: String| Error::InvalidIndex {
        path: path.to_path_buf(),
        reason,
    };
    #[derive(Deserialize)]
    struct Index {
        weight_map: Entries<Value>,
    }
    let index: Index = serde_json::from_slice(text).map_err(|e| invalid(e.to_string()))?;
    let raw = index.weight_map.0;
    let mut out = BTreeMap::new();
    for (name, value) in raw {
        let Value::String(shard) = value else {
            return Err(invalid(format!(
                "weight_map[{name:?}] is {value}, expected a file name"
            )));
        };
        // A shard is a plain file name beside the index: no directories, no `..`, not absolute.
        let mut comps = Path::new(&shard).components();
        let plain = matches!((comps.next(), comps.next()), (Some(Component::Normal(_)), None));
        if !plain {
            return Err(invalid(format!(
                "weight_map[{name:?}] = {shard:?} is not a plain file name beside the index"
            )));
        }
        if out.insert(name.clone(), shard).is_some() {
            return Err(Error::DuplicateTensor {
                path: path.to_path_buf(),
                name,
            });
        }
    }
    Ok(out)
}

/// Write a safetensors file (used by importers and tests): `(name, dtype, shape, little-endian bytes)`.
/// Each byte length must equal shape x dtype size, names must be unique. The header is padded so that
/// every tensor is aligned. Written to a temporary file beside `path`, then renamed into place.
pub fn write(
    path: &Path,
    tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let mut seen = HashSet::with_capacity(tensors.len());
    let mut views = Vec::with_capacity(tensors.len());
    for (name, dtype, shape, bytes) in tensors {
        if !seen.insert(name.as_str()) {
            return Err(Error::DuplicateTensor {
                path: path.to_path_buf(),
                name: name.clone(),
            });
        }
        let expected = shape
            .iter()
            .try_fold(dtype.size() as u64, |a, &d| a.checked_mul(d as u64))
            .ok_or_else(|| Error::ShapeOverflow {
                path: path.to_path_buf(),
                name: name.clone(),
                shape: shape.clone(),
            })?;
        if expected != bytes.len() as u64 {
            return Err(Error::TensorSize {
                path: path.to_path_buf(),
                name: name.clone(),
                dtype: dtype.to_string(),
                shape: shape.clone(),
                expected,
                found: bytes.len() as u64,
            });
        }
        let st_dtype = to_st_dtype(*dtype).ok_or_else(|| Error::Write {
            path: path.to_path_buf(),
            reason: format!("tensor {name:?}: safetensors has no dtype for GGUF {dtype} blocks"),
        })?;
        let view = safetensors::tensor::TensorView::new(st_dtype, shape.clone(), bytes).map_err(|e| Error::Write {
            path: path.to_path_buf(),
            reason: format!("tensor {name:?}: {e}"),
        })?;
        views.push((name.as_str(), view));
    }
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let written = safetensors::serialize_to_file(views, metadata, &tmp);
    if written.is_err() {
        // Best effort: do not leave a partial temporary file behind (the error below is what matters).
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(|e| match e {
        safetensors::SafeTensorError::IoError(source) => Error::Io {
            path: tmp.clone(),
            source,
        },
        other => Error::Write {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
