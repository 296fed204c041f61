//! `encrypt` and `decrypt`: per-column authenticated encryption.
//!
//! ```toml
//! [[stage]]
//! type = "encrypt"
//! algorithm = "sm4-gcm"               # or "aes-256-gcm"
//! key_id = "civil-2026"
//! key = "file:keys/civil-2026.key"    # 16 bytes for SM4, 32 for AES-256; raw or hex
//! columns = ["id_card", "phone"]
//! ```
//!
//! Each value (as text) becomes a binary cell: `TX` `1` (format version),
//! the algorithm, the key id, a random 96-bit nonce, then the ciphertext and
//! its 128-bit tag. The header and the column name are authenticated data,
//! so a flipped bit anywhere, a changed key id or a cell moved to another
//! column fails decryption. A receiver holding the key decrypts with
//!
//! ```toml
//! [[stage]]
//! type = "decrypt"
//! keys = { civil-2026 = "file:keys/civil-2026.key" }
//! columns = ["id_card", "phone"]
//! ```
//!
//! A cell that fails authentication is a dirty row (reason and column), never
//! garbage output. NULL stays NULL.

use super::{column_indexes, keys, retyped};
use crate::dirty::{DirtyRow, Rejects};
use crate::error::{Error, Location, Result};
use crate::spec::{SpecError, StageConfig};
use crate::stage::{Stage, StageFactory, StagePlan};
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::AesGcm;
use arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, StringBuilder};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

type Sm4Gcm = AesGcm<sm4::Sm4, U12>;

const MAGIC: &[u8; 2] = b"TX";
const VERSION: u8 = 1;

/// A supported cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// AES-256 in Galois/Counter Mode.
    Aes256Gcm,
    /// SM4 (GB/T 32907) in Galois/Counter Mode.
    Sm4Gcm,
}

impl Algorithm {
    /// `aes-256-gcm` or `sm4-gcm` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "aes-256-gcm" => Some(Algorithm::Aes256Gcm),
            "sm4-gcm" => Some(Algorithm::Sm4Gcm),
            _ => None,
        }
    }

    /// The byte that names the algorithm in encrypted cells and files.
    pub fn code(self) -> u8 {
        match self {
            Algorithm::Aes256Gcm => 1,
            Algorithm::Sm4Gcm => 2,
        }
    }

    /// The algorithm a cell or file header names.
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Algorithm::Aes256Gcm),
            2 => Some(Algorithm::Sm4Gcm),
            _ => None,
        }
    }

    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Algorithm::Aes256Gcm => 32,
            Algorithm::Sm4Gcm => 16,
        }
    }
}

/// A keyed cipher instance.
#[derive(Clone)]
pub enum Cipher {
    /// AES-256-GCM, by ring: its AES-NI, VAES and carry-less multiply code
    /// seals about three times faster than a portable implementation.
    Aes(Box<LessSafeKey>),
    /// SM4-GCM.
    Sm4(Box<Sm4Gcm>),
}

const GCM_OK: &str = "GCM encryption of an in-memory value cannot fail";

impl Cipher {
    /// A cipher for `key`, which must be the algorithm's key length.
    pub fn new(alg: Algorithm, key: &[u8]) -> Result<Self, String> {
        if key.len() != alg.key_len() {
            return Err(format!(
                "the key is {} bytes; {alg:?} needs {}",
                key.len(),
                alg.key_len()
            ));
        }
        Ok(match alg {
            Algorithm::Aes256Gcm => Cipher::Aes(Box::new(LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, key).map_err(|_| "not an AES-256 key")?,
            ))),
            Algorithm::Sm4Gcm => Cipher::Sm4(Box::new(
                Sm4Gcm::new_from_slice(key).map_err(|e| e.to_string())?,
            )),
        })
    }

    /// Ciphertext followed by the 16-byte tag.
    pub fn seal(&self, nonce: &[u8; 12], aad: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(msg.len() + 16);
        self.seal_into(nonce, aad, msg, &mut out);
        out
    }

    /// Appends `msg` sealed (ciphertext, then tag) to `out`, without
    /// allocating: the hot path of the encrypt stage.
    pub fn seal_into(&self, nonce: &[u8; 12], aad: &[u8], msg: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(msg);
        let tag = self.seal_in_place(nonce, aad, &mut out[start..]);
        out.extend_from_slice(&tag);
    }

    /// Encrypts `buf` in place and returns its 16-byte tag: the framed file
    /// format seals chunks inside one output buffer without copies.
    pub fn seal_in_place(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
        use aes_gcm::aead::AeadInOut;
        match self {
            Cipher::Aes(k) => {
                let n = Nonce::assume_unique_for_key(*nonce);
                let tag = k
                    .seal_in_place_separate_tag(n, Aad::from(aad), buf)
                    .expect(GCM_OK);
                tag.as_ref().try_into().expect("GCM tags are 16 bytes")
            }
            Cipher::Sm4(c) => c
                .encrypt_inout_detached(&(*nonce).into(), aad, buf.into())
                .expect(GCM_OK)
                .into(),
        }
    }

    /// Decrypts `buf` in place when `tag` authenticates it; `false` (and
    /// `buf` unspecified) otherwise.
    pub fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; 16],
    ) -> bool {
        use aes_gcm::aead::AeadInOut;
        match self {
            Cipher::Aes(k) => {
                let n = Nonce::assume_unique_for_key(*nonce);
                k.open_in_place_separate_tag(n, Aad::from(aad), Tag::from(*tag), buf, 0..)
                    .is_ok()
            }
            Cipher::Sm4(c) => c
                .decrypt_inout_detached(&(*nonce).into(), aad, buf.into(), &(*tag).into())
                .is_ok(),
        }
    }

    /// The plaintext, or `None` when the tag does not match.
    pub fn open(&self, nonce: &[u8; 12], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        match self {
            Cipher::Aes(_) => {
                let split = sealed.len().checked_sub(16)?;
                let mut buf = sealed[..split].to_vec();
                let tag: [u8; 16] = sealed[split..].try_into().expect("16 bytes");
                self.open_in_place(nonce, aad, &mut buf, &tag)
                    .then_some(buf)
            }
            Cipher::Sm4(c) => c
                .decrypt(&(*nonce).into(), Payload { msg: sealed, aad })
                .ok(),
        }
    }
}

/// `[[stage]] type = "encrypt"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptConfig {
    /// Always `"encrypt"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `aes-256-gcm` or `sm4-gcm`.
    pub algorithm: String,
    /// Names the key; written into every cell so receivers pick the key.
    pub key_id: String,
    /// `env:NAME` or `file:PATH`.
    pub key: String,
    /// Columns to encrypt.
    pub columns: Vec<String>,
}

/// `[[stage]] type = "decrypt"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecryptConfig {
    /// Always `"decrypt"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Key id → `env:NAME` or `file:PATH`.
    pub keys: BTreeMap<String, String>,
    /// Columns to decrypt (binary cells written by `encrypt`).
    pub columns: Vec<String>,
}

fn header(alg: Algorithm, key_id: &str) -> Vec<u8> {
    let mut h = Vec::with_capacity(5 + key_id.len());
    h.extend_from_slice(MAGIC);
    h.push(VERSION);
    h.push(alg.code());
    h.push(key_id.len() as u8);
    h.extend_from_slice(key_id.as_bytes());
    h
}

fn aad(header: &[u8], column: &str) -> Vec<u8> {
    let mut a = header.to_vec();
    a.extend_from_slice(column.as_bytes());
    a
}

/// Registers `type = "encrypt"`.
pub struct EncryptFactory;

fn check_encrypt(cfg: &StageConfig) -> Result<(EncryptConfig, Algorithm), SpecError> {
    let c: EncryptConfig = cfg.parse()?;
    let alg = Algorithm::parse(&c.algorithm)
        .ok_or_else(|| cfg.error("algorithm", "expected `aes-256-gcm` or `sm4-gcm`"))?;
    if c.key_id.is_empty() || c.key_id.len() > 255 {
        return Err(cfg.error("key_id", "expected a name of 1 to 255 bytes"));
    }
    if !keys::well_formed(&c.key) {
        return Err(cfg.error("key", "expected `env:NAME` or `file:PATH`"));
    }
    if c.columns.is_empty() {
        return Err(cfg.error("columns", "name at least one column to encrypt"));
    }
    Ok((c, alg))
}

impl StageFactory for EncryptFactory {
    fn kind(&self) -> &'static str {
        "encrypt"
    }

    fn validate(&self, cfg: &StageConfig) -> Result<(), SpecError> {
        check_encrypt(cfg).map(|_| ())
    }

    fn plan(&self, cfg: &StageConfig, input: SchemaRef) -> Result<Arc<dyn StagePlan>> {
        let (c, alg) = check_encrypt(cfg)?;
        let idx = column_indexes(cfg, "encrypt", &input, &c.columns)?;
        let key = keys::load(&c.key)
            .map_err(|e| Error::Config(format!("stage {} (encrypt): {e}", cfg.index())))?;
        let cipher = Cipher::new(alg, &key)
            .map_err(|e| Error::Config(format!("stage {} (encrypt): {e}", cfg.index())))?;
        Ok(Arc::new(EncryptPlan {
            schema: retyped(&input, &idx, DataType::Binary),
            idx,
            cipher,
            header: header(alg, &c.key_id),
        }))
    }
}

#[derive(Clone)]
struct EncryptPlan {
    schema: SchemaRef,
    idx: Vec<usize>,
    cipher: Cipher,
    header: Vec<u8>,
}

impl StagePlan for EncryptPlan {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn start(&self) -> Result<Box<dyn Stage>> {
        Ok(Box::new(self.clone()))
    }
}

impl Stage for EncryptPlan {
    fn process(&mut self, batch: RecordBatch, _rejects: &mut Rejects) -> Result<RecordBatch> {
        let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
        let mut nonces = vec![0u8; 12 * batch.num_rows()];
        for &i in &self.idx {
            let name = self.schema.field(i).name();
            let aad = aad(&self.header, name);
            let text = arrow::compute::cast(&cols[i], &DataType::Utf8)
                .map_err(|e| Error::Internal(format!("encrypt: {e}")))?;
            let s = text.as_string::<i32>();
            getrandom::fill(&mut nonces)
                .map_err(|e| Error::Internal(format!("no random nonces: {e}")))?;
            let mut b = BinaryBuilder::with_capacity(
                s.len(),
                s.value_data().len() + s.len() * (self.header.len() + 28),
            );
            let mut cell = Vec::new();
            for r in 0..s.len() {
                if s.is_null(r) {
                    b.append_null();
                    continue;
                }
                let nonce: [u8; 12] = nonces[12 * r..12 * r + 12].try_into().expect("12 bytes");
                cell.clear();
                cell.extend_from_slice(&self.header);
                cell.extend_from_slice(&nonce);
                self.cipher
                    .seal_into(&nonce, &aad, s.value(r).as_bytes(), &mut cell);
                b.append_value(&cell);
            }
            cols[i] = Arc::new(b.finish());
        }
        RecordBatch::try_new(self.schema.clone(), cols)
            .map_err(|e| Error::Internal(format!("encrypt: {e}")))
    }
}

/// Registers `type = "decrypt"`.
pub struct DecryptFactory;

fn check_decrypt(cfg: &StageConfig) -> Result<DecryptConfig, SpecError> {
    let c: DecryptConfig = cfg.parse()?;
    if c.keys.is_empty() {
        return Err(cfg.error("keys", "name at least one key: { key_id = \"file:PATH\" }"));
    }
    if let Some((id, _)) = c.keys.iter().find(|(_, k)| !keys::well_formed(k)) {
        return Err(cfg.error(
            "keys",
            format!("key `{id}`: expected `env:NAME` or `file:PATH`"),
        ));
    }
    if c.columns.is_empty() {
        return Err(cfg.error("columns", "name at least one column to decrypt"));
    }
    Ok(c)
}

impl StageFactory for DecryptFactory {
    fn kind(&self) -> &'static str {
        "decrypt"
    }

    fn validate(&self, cfg: &StageConfig) -> Result<(), SpecError> {
        check_decrypt(cfg).map(|_| ())
    }

    fn plan(&self, cfg: &StageConfig, input: SchemaRef) -> Result<Arc<dyn StagePlan>> {
        let c = check_decrypt(cfg)?;
        let idx = column_indexes(cfg, "decrypt", &input, &c.columns)?;
        for &i in &idx {
            if !matches!(
                input.field(i).data_type(),
                DataType::Binary | DataType::LargeBinary
            ) {
                return Err(Error::Config(format!(
                    "stage {} (decrypt): column `{}` is {}, not the binary cells `encrypt` writes",
                    cfg.index(),
                    input.field(i).name(),
                    input.field(i).data_type()
                )));
            }
        }
        let mut keyring = BTreeMap::new();
        for (id, spec) in &c.keys {
            let key = keys::load(spec).map_err(|e| {
                Error::Config(format!("stage {} (decrypt), key `{id}`: {e}", cfg.index()))
            })?;
            keyring.insert(id.clone(), key);
        }
        Ok(Arc::new(DecryptPlan {
            schema: retyped(&input, &idx, DataType::Utf8),
            idx,
            keyring: Arc::new(keyring),
        }))
    }
}

#[derive(Clone)]
struct DecryptPlan {
    schema: SchemaRef,
    idx: Vec<usize>,
    keyring: Arc<BTreeMap<String, Vec<u8>>>,
}

impl StagePlan for DecryptPlan {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn start(&self) -> Result<Box<dyn Stage>> {
        Ok(Box::new(Decryptor {
            plan: self.clone(),
            ciphers: BTreeMap::new(),
        }))
    }
}

struct Decryptor {
    plan: DecryptPlan,
    ciphers: BTreeMap<(String, u8), Cipher>,
}

impl Decryptor {
    /// Opens one cell; `Err` says why it cannot be trusted.
    fn open_cell(&mut self, column: &str, cell: &[u8]) -> Result<String, String> {
        let bad = || "not a cell written by the encrypt stage".to_string();
        if cell.len() < 5 || &cell[..2] != MAGIC || cell[2] != VERSION {
            return Err(bad());
        }
        let alg = Algorithm::from_code(cell[3]).ok_or_else(bad)?;
        let id_len = cell[4] as usize;
        let hdr_len = 5 + id_len;
        if cell.len() < hdr_len + 12 + 16 {
            return Err(bad());
        }
        let key_id = std::str::from_utf8(&cell[5..hdr_len])
            .map_err(|_| bad())?
            .to_string();
        let cipher = match self.ciphers.get(&(key_id.clone(), alg.code())) {
            Some(c) => c.clone(),
            None => {
                let key = self
                    .plan
                    .keyring
                    .get(&key_id)
                    .ok_or_else(|| format!("no key for key id `{key_id}`"))?;
                let c = Cipher::new(alg, key).map_err(|e| format!("key `{key_id}`: {e}"))?;
                self.ciphers.insert((key_id.clone(), alg.code()), c.clone());
                c
            }
        };
        let nonce: [u8; 12] = cell[hdr_len..hdr_len + 12].try_into().expect("12 bytes");
        let plain = cipher
            .open(
                &nonce,
                &aad(&cell[..hdr_len], column),
                &cell[hdr_len + 12..],
            )
            .ok_or_else(|| {
                format!("authentication failed (tampered data or the wrong key `{key_id}`)")
            })?;
        String::from_utf8(plain).map_err(|_| "decrypted value is not UTF-8".to_string())
    }
}

impl Stage for Decryptor {
    fn process(&mut self, batch: RecordBatch, rejects: &mut Rejects) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
        let mut keep = vec![true; n];
        let idx = self.plan.idx.clone();
        for i in idx {
            let name = self.plan.schema.field(i).name().clone();
            let bin = arrow::compute::cast(&cols[i], &DataType::Binary)
                .map_err(|e| Error::Internal(format!("decrypt: {e}")))?;
            let bin = bin.as_binary::<i32>();
            let mut b = StringBuilder::with_capacity(n, bin.value_data().len());
            for (r, kept) in keep.iter_mut().enumerate() {
                if bin.is_null(r) {
                    b.append_null();
                    continue;
                }
                match self.open_cell(&name, bin.value(r)) {
                    Ok(v) => b.append_value(v),
                    Err(reason) => {
                        b.append_null();
                        if *kept {
                            *kept = false;
                            let loc = Location {
                                file: "decrypt stage".into(),
                                column: Some(name.clone()),
                                ..Default::default()
                            };
                            rejects.reject(DirtyRow::row(loc, reason))?;
                        }
                    }
                }
            }
            cols[i] = Arc::new(b.finish());
        }
        let out = RecordBatch::try_new(self.plan.schema.clone(), cols)
            .map_err(|e| Error::Internal(format!("decrypt: {e}")))?;
        if keep.iter().all(|k| *k) {
            return Ok(out);
        }
        arrow::compute::filter_record_batch(&out, &BooleanArray::from(keep))
            .map_err(|e| Error::Internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // Test case 16 of the GCM specification (McGrew and Viega), 256-bit key.
    #[test]
    fn aes_256_gcm_published_vector() {
        let c = Cipher::new(
            Algorithm::Aes256Gcm,
            &hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"),
        )
        .unwrap();
        let nonce: [u8; 12] = hex("cafebabefacedbaddecaf888").try_into().unwrap();
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let pt = hex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
        let out = c.seal(&nonce, &aad, &pt);
        let want = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662".to_string() + "76fc6ece0f4e1768cddf8853bb2d551b";
        assert_eq!(out, hex(&want));
        assert_eq!(c.open(&nonce, &aad, &out).unwrap(), pt);
    }

    // RFC 8998, appendix A.1: SM4-GCM.
    #[test]
    fn sm4_gcm_published_vector() {
        let c = Cipher::new(Algorithm::Sm4Gcm, &hex("0123456789abcdeffedcba9876543210")).unwrap();
        let nonce: [u8; 12] = hex("00001234567800000000abcd").try_into().unwrap();
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let pt = hex("aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbccccccccccccccccddddddddddddddddeeeeeeeeeeeeeeeeffffffffffffffffeeeeeeeeeeeeeeeeaaaaaaaaaaaaaaaa");
        let out = c.seal(&nonce, &aad, &pt);
        let want = "17f399f08c67d5ee19d0dc9969c4bb7d5fd46fd3756489069157b282bb200735d82710ca5c22f0ccfa7cbf93d496ac15a56834cbcf98c397b4024a2691233b8d".to_string() + "83de3541e4c2b58177e065a9bf7b62ec";
        assert_eq!(out, hex(&want));
    }

    #[test]
    fn seal_into_matches_seal() {
        for alg in [Algorithm::Aes256Gcm, Algorithm::Sm4Gcm] {
            let c = Cipher::new(
                alg,
                &vec![9u8; if alg == Algorithm::Sm4Gcm { 16 } else { 32 }],
            )
            .unwrap();
            let mut out = b"prefix".to_vec();
            c.seal_into(&[3u8; 12], b"aad", b"hello, world", &mut out);
            assert_eq!(
                &out[6..],
                c.seal(&[3u8; 12], b"aad", b"hello, world").as_slice()
            );
        }
    }

    #[test]
    fn any_flipped_bit_fails_authentication() {
        for alg in [Algorithm::Aes256Gcm, Algorithm::Sm4Gcm] {
            let c = Cipher::new(alg, &vec![7u8; alg.key_len()]).unwrap();
            let nonce = [1u8; 12];
            let sealed = c.seal(&nonce, b"hdr", b"110101199003071234");
            for byte in 0..sealed.len() {
                for bit in 0..8 {
                    let mut t = sealed.clone();
                    t[byte] ^= 1 << bit;
                    assert!(
                        c.open(&nonce, b"hdr", &t).is_none(),
                        "{alg:?} byte {byte} bit {bit}"
                    );
                }
            }
            assert!(
                c.open(&nonce, b"hdX", &sealed).is_none(),
                "{alg:?}: authenticated data is checked"
            );
            assert!(
                c.open(&nonce, b"hdr", &sealed[..15]).is_none(),
                "shorter than a tag"
            );
        }
        assert!(
            Cipher::new(Algorithm::Aes256Gcm, &[7u8; 16]).is_err(),
            "wrong key length"
        );
    }
}
