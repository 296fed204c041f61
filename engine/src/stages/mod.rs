//! Built-in stage types.

pub mod crypt;
pub mod keys;
pub mod mask;

use crate::connector::Registry;

/// Registers every built-in stage type.
pub fn register(r: &mut Registry) {
    r.register_stage(mask::MaskFactory);
    r.register_stage(crypt::EncryptFactory);
    r.register_stage(crypt::DecryptFactory);
}
