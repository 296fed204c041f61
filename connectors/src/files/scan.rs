//! Finds the bytes that matter to a CSV tokenizer (delimiter, newline,
//! quote) sixteen bytes at a time: one comparison per byte class and a
//! bitmask per block, then one bit per match. A record of eight fields
//! costs a handful of blocks instead of a search call per field.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
};

const BLOCK: usize = 16;

/// The positions in `hay` of any of three bytes, in increasing order.
pub struct Scan3<'a> {
    hay: &'a [u8],
    bytes: [u8; 3],
    #[cfg(target_arch = "x86_64")]
    needles: [__m128i; 3],
    /// Start of the block `mask` describes.
    base: usize,
    /// Matches not yet returned in that block: bit `i` for `hay[base + i]`.
    mask: u32,
}

impl<'a> Scan3<'a> {
    pub fn new(hay: &'a [u8], a: u8, b: u8, c: u8) -> Self {
        let mut s = Scan3 {
            hay,
            bytes: [a, b, c],
            // SAFETY: SSE2 is part of every x86_64 target.
            #[cfg(target_arch = "x86_64")]
            needles: unsafe { [a, b, c].map(|x| _mm_set1_epi8(x as i8)) },
            base: 0,
            mask: 0,
        };
        s.seek(0);
        s
    }

    /// Continues the scan from `at`: the next match returned is the first
    /// at or after it.
    pub fn seek(&mut self, at: usize) {
        self.base = at;
        self.mask = self.block(at);
    }

    fn block(&self, at: usize) -> u32 {
        #[cfg(target_arch = "x86_64")]
        if at + BLOCK <= self.hay.len() {
            // SAFETY: SSE2 is part of every x86_64 target, and the sixteen
            // bytes loaded from `at` lie inside `hay` (checked above).
            return unsafe {
                let v = _mm_loadu_si128(self.hay.as_ptr().add(at).cast());
                let [a, b, c] = self.needles;
                let m = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(v, a), _mm_cmpeq_epi8(v, b)),
                    _mm_cmpeq_epi8(v, c),
                );
                _mm_movemask_epi8(m) as u32
            };
        }
        let [a, b, c] = self.bytes;
        let end = (at + BLOCK).min(self.hay.len());
        self.hay
            .get(at..end)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter(|&(_, &x)| x == a || x == b || x == c)
            .fold(0, |m, (i, _)| m | 1 << i)
    }
}

impl Iterator for Scan3<'_> {
    type Item = usize;

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.base += BLOCK;
            if self.base >= self.hay.len() {
                return None;
            }
            self.mask = self.block(self.base);
        }
        let i = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(self.base + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_match_in_order_and_after_a_seek() {
        // Lengths around the block size, matches at block edges, and
        // bytes with the high bit set (signed compares must not matter).
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..200 {
            let hay: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    [b',', b'\n', b'"', b'a', 0xe4, 0xff, b'z', b'x'][(seed % 8) as usize]
                })
                .collect();
            let want: Vec<usize> = (0..len)
                .filter(|&i| matches!(hay[i], b',' | b'\n' | b'"'))
                .collect();
            assert_eq!(
                Scan3::new(&hay, b',', b'\n', b'"').collect::<Vec<_>>(),
                want
            );
            let high: Vec<usize> = (0..len).filter(|&i| hay[i] == 0xff).collect();
            assert_eq!(Scan3::new(&hay, 0xff, 0xff, 0xff).collect::<Vec<_>>(), high);
            for at in [0, 1, 15, 16, 17, len / 2, len] {
                let mut s = Scan3::new(&hay, b',', b'\n', b'"');
                s.next();
                s.seek(at.min(len));
                let rest: Vec<usize> = want.iter().copied().filter(|&i| i >= at).collect();
                assert_eq!(s.collect::<Vec<_>>(), rest, "len {len} seek {at}");
            }
        }
    }
}
