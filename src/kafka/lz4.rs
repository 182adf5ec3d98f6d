//! LZ4 frames, the format of Kafka's lz4 record batches, decompressed
//! block by block straight into the caller's buffer.
//!
//! A frame decoder object allocates its block buffers for every batch
//! (64 KiB each for the usual producers, so with musl's allocator each
//! batch cost an `mmap`/`munmap` pair) and copies every byte once more;
//! here the only buffer is the caller's, reused from batch to batch, and
//! its bytes are not zeroed again for every batch (a block is decoded into
//! room of its maximum size, as large as the whole of a usual batch). The
//! header and content checksums are skipped, not checked: the batch's
//! CRC32C, verified before, covers every byte of the frame.
//!
//! Pure: bytes in, bytes out, no I/O.

/// `0x184D2204`, little-endian.
const MAGIC: u32 = 0x184D_2204;
/// Skippable frames carry no data (magic `0x184D2A50..=0x184D2A5F`).
const SKIPPABLE: u32 = 0x184D_2A50;
/// A linked block may refer to this much of the output before it.
const WINDOW: usize = 64 << 10;

/// Writes the decompressed content of the frames in `input` to the front
/// of `out` and returns its length; fails if it would exceed `limit` bytes
/// or the frames are malformed. `out` is grown, never shrunk: what lies
/// beyond the returned length is scratch room for the next call.
pub fn decompress(input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<usize, String> {
    let mut r = Reader { input, pos: 0 };
    let mut used = 0;
    while r.pos < input.len() {
        let magic = r.u32()?;
        if magic & 0xFFFF_FFF0 == SKIPPABLE {
            let len = r.u32()? as usize;
            r.take(len)?;
            continue;
        }
        if magic != MAGIC {
            return Err(format!("not an lz4 frame (magic {magic:#010x})"));
        }
        let flags = r.u8()?;
        let bd = r.u8()?;
        if flags >> 6 != 1 {
            return Err(format!("lz4 frame version {} is not 1", flags >> 6));
        }
        let linked = flags & 0x20 == 0;
        let block_checksums = flags & 0x10 != 0;
        let content_checksum = flags & 0x04 != 0;
        if flags & 0x08 != 0 {
            r.take(8)?;
        }
        if flags & 0x01 != 0 {
            return Err("lz4 frame needs a dictionary".into());
        }
        let max_block = match (bd >> 4) & 0x7 {
            4 => 64 << 10,
            5 => 256 << 10,
            6 => 1 << 20,
            7 => 4 << 20,
            n => return Err(format!("lz4 block size code {n} is not 4..=7")),
        };
        r.take(1)?; // header checksum
        let frame_start = used;
        loop {
            let word = r.u32()?;
            if word == 0 {
                break;
            }
            let len = (word & 0x7FFF_FFFF) as usize;
            if len > max_block {
                return Err(format!("lz4 block of {len} bytes exceeds {max_block}"));
            }
            let block = r.take(len)?;
            if used > limit {
                return Err(format!("decompresses to more than {limit} bytes"));
            }
            if out.len() < used + max_block {
                out.resize(used + max_block, 0);
            }
            let n = if word & 0x8000_0000 != 0 {
                out[used..used + len].copy_from_slice(block);
                len
            } else if linked {
                let (before, after) = out.split_at_mut(used);
                let dict = &before[frame_start.max(used.saturating_sub(WINDOW))..];
                lz4_flex::block::decompress_into_with_dict(block, &mut after[..max_block], dict)
                    .map_err(|e| format!("lz4 block: {e}"))?
            } else {
                lz4_flex::block::decompress_into(block, &mut out[used..used + max_block])
                    .map_err(|e| format!("lz4 block: {e}"))?
            };
            used += n;
            if block_checksums {
                r.take(4)?;
            }
        }
        if content_checksum {
            r.take(4)?;
        }
        if used > limit {
            return Err(format!("decompresses to more than {limit} bytes"));
        }
    }
    Ok(used)
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.input.len());
        let Some(end) = end else {
            return Err(format!(
                "lz4 frame ends after {} bytes, inside a field",
                self.input.len()
            ));
        };
        let bytes = &self.input[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};

    use super::*;

    fn data(len: usize) -> Vec<u8> {
        // Compressible text with some noise, longer than one block.
        let mut state = 7u64;
        (0..len)
            .map(|i| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                if i % 7 == 0 {
                    (state >> 56) as u8
                } else {
                    b"kafka-store archives records "[i % 29]
                }
            })
            .collect()
    }

    fn frame(info: FrameInfo, content: &[u8]) -> Vec<u8> {
        let mut e = FrameEncoder::with_frame_info(info, Vec::new());
        e.write_all(content).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn every_frame_layout_round_trips() {
        let content = data(300 << 10);
        let noise: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let layouts: [fn(u64) -> FrameInfo; 7] = [
            |_| FrameInfo::new(),
            |_| FrameInfo::new().block_mode(BlockMode::Independent),
            |_| FrameInfo::new().block_mode(BlockMode::Linked),
            |len| {
                FrameInfo::new()
                    .block_checksums(true)
                    .content_checksum(true)
                    .content_size(Some(len))
            },
            |_| FrameInfo::new().block_size(BlockSize::Max256KB),
            |_| {
                FrameInfo::new()
                    .block_size(BlockSize::Max1MB)
                    .block_mode(BlockMode::Independent)
            },
            |_| FrameInfo::new().block_size(BlockSize::Max4MB),
        ];
        // One buffer for all, holding what the call before left in it.
        let mut out = vec![0xA5; 1000];
        for (i, info) in layouts.into_iter().enumerate() {
            for content in [&content[..], &noise[..], &[][..], b"x"] {
                let compressed = frame(info(content.len() as u64), content);
                let n = decompress(&compressed, &mut out, 1 << 30).unwrap();
                assert!(out[..n] == *content, "layout {i}, {} bytes", content.len());
            }
        }
    }

    #[test]
    fn linked_blocks_refer_to_the_blocks_before_them() {
        // Built by hand: each block compressed against the 64 KiB before it.
        let content = data(400 << 10);
        let mut input = MAGIC.to_le_bytes().to_vec();
        input.extend_from_slice(&[0x40, 0x40, 0]);
        for start in (0..content.len()).step_by(WINDOW) {
            let block = &content[start..(start + WINDOW).min(content.len())];
            let dict = &content[start.saturating_sub(WINDOW)..start];
            let c = lz4_flex::block::compress_with_dict(block, dict);
            input.extend_from_slice(&(c.len() as u32).to_le_bytes());
            input.extend_from_slice(&c);
        }
        input.extend_from_slice(&0u32.to_le_bytes());
        let alone: usize = (0..content.len())
            .step_by(WINDOW)
            .map(|s| lz4_flex::block::compress(&content[s..(s + WINDOW).min(content.len())]).len())
            .sum();
        assert!(input.len() < alone, "the blocks do not refer back");
        let mut out = Vec::new();
        let n = decompress(&input, &mut out, 1 << 30).unwrap();
        assert!(out[..n] == content);
    }

    #[test]
    fn concatenated_and_skippable_frames_are_read_through() {
        let (a, b) = (data(70_000), data(1000));
        let mut input = frame(FrameInfo::new(), &a);
        input.extend_from_slice(&(SKIPPABLE + 3).to_le_bytes());
        input.extend_from_slice(&5u32.to_le_bytes());
        input.extend_from_slice(b"12345");
        input.extend(frame(FrameInfo::new(), &b));
        let mut out = Vec::new();
        let n = decompress(&input, &mut out, 1 << 30).unwrap();
        assert!(out[..n] == [a, b].concat());
    }

    #[test]
    fn malformed_frames_and_too_much_output_are_errors() {
        let content = data(200 << 10);
        let good = frame(FrameInfo::new(), &content);
        let cases: Vec<(Vec<u8>, usize, &str)> = vec![
            (
                b"\x00\x01\x02\x03rest".to_vec(),
                1 << 30,
                "not an lz4 frame",
            ),
            (good[..good.len() - 3].to_vec(), 1 << 30, "ends after"),
            (good[..5].to_vec(), 1 << 30, "ends after"),
            (good.clone(), 100 << 10, "more than 102400 bytes"),
            (
                {
                    let mut g = good.clone();
                    g[4] = (g[4] & 0x3F) | 0x80;
                    g
                },
                1 << 30,
                "version 2",
            ),
            (
                {
                    let mut g = good.clone();
                    g[5] = 0x30;
                    g
                },
                1 << 30,
                "block size code 3",
            ),
        ];
        for (input, limit, want) in cases {
            let err = decompress(&input, &mut Vec::new(), limit).unwrap_err();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }

    #[test]
    fn damaged_blocks_are_errors_or_bytes_never_a_crash() {
        // A producer's batch whose CRC32C is right (it is computed over
        // whatever the producer compressed) but whose lz4 is not: a byte of
        // a compressed block damaged anywhere, in independent and linked
        // blocks, must give an error or some bytes within the limit.
        let content = data(150 << 10);
        for info in [
            FrameInfo::new().block_mode(BlockMode::Independent),
            FrameInfo::new().block_mode(BlockMode::Linked),
        ] {
            let good = frame(info, &content);
            let mut out = Vec::new();
            let mut errors = 0;
            for at in (7..good.len()).step_by(193) {
                for value in [0x00, 0xFF, good[at] ^ 0x40] {
                    let mut bad = good.clone();
                    bad[at] = value;
                    match decompress(&bad, &mut out, 256 << 10) {
                        Ok(n) => assert!(n <= 256 << 10, "byte {at}: {n} bytes"),
                        Err(_) => errors += 1,
                    }
                }
            }
            assert!(errors > 0, "no damage was noticed");
        }
    }
}
