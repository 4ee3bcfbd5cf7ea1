//! Sizes of what is deployed: each function's arm64 `bootstrap` and its zip, as
//! `cargo lambda build --release --arm64 --output-format zip` leaves them in `$CARGO_TARGET_DIR/lambda/`.

use std::path::Path;

/// Sizes of one function, in bytes (`None`: not built).
#[derive(Debug, Clone)]
pub struct Size {
    pub name: String,
    pub bootstrap: Option<u64>,
    pub zip: Option<u64>,
    /// The x86_64 release binary the cold starts ran.
    pub native: Option<u64>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u16::from_le_bytes(
        b.get(at..at + 2)?.try_into().ok()?,
    )))
}

fn u32_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from(u32::from_le_bytes(
        b.get(at..at + 4)?.try_into().ok()?,
    )))
}

/// The uncompressed size of entry `name` of a zip file (from its central directory).
pub fn zip_entry_size(zip: &Path, name: &str) -> Option<u64> {
    let b = std::fs::read(zip).ok()?;
    // End of central directory: signature 0x06054b50, at most 64 KiB of comment after it.
    let from = b.len().saturating_sub(22 + 65_536);
    let eocd = (from..b.len().saturating_sub(21))
        .rev()
        .find(|&i| b[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])?;
    let entries = u16_at(&b, eocd + 10)?;
    let mut at = usize::try_from(u32_at(&b, eocd + 16)?).ok()?;
    for _ in 0..entries {
        if b.get(at..at + 4)? != [0x50, 0x4b, 0x01, 0x02] {
            return None;
        }
        let size = u32_at(&b, at + 24)?;
        let name_len = usize::try_from(u16_at(&b, at + 28)?).ok()?;
        let extra = usize::try_from(u16_at(&b, at + 30)?).ok()?;
        let comment = usize::try_from(u16_at(&b, at + 32)?).ok()?;
        if b.get(at + 46..at + 46 + name_len)? == name.as_bytes() {
            return Some(size);
        }
        at += 46 + name_len + extra + comment;
    }
    None
}

pub fn measure(functions: &[String], target_dir: &Path) -> Vec<Size> {
    functions
        .iter()
        .map(|f| {
            let zip = target_dir.join("lambda").join(f).join("bootstrap.zip");
            let file_size = |p: &Path| std::fs::metadata(p).ok().map(|m| m.len());
            Size {
                name: f.clone(),
                bootstrap: zip_entry_size(&zip, "bootstrap")
                    .or_else(|| file_size(&target_dir.join("lambda").join(f).join("bootstrap"))),
                zip: file_size(&zip),
                native: file_size(&target_dir.join("release").join(f)),
            }
        })
        .collect()
}
