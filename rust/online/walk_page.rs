//! The walker's reading of LMDB pages ([`super`]): one page of the snapshot with its
//! header checked, a node's key, a branch node's child, a leaf node's value (inline or
//! in an overflow run), and the key comparison and prefetch the batch loop uses.
//!
//! **Algorithm.** Page `p` starts `p * psize` bytes into the map. Every page number read
//! (a child, an overflow run) is checked against the snapshot's last page before its
//! bytes are touched; a page's header must carry its own number and the flags expected
//! at its level (branch above the tree's depth, leaf at it); a node's offset and key
//! must lie inside its page, a value inside its page or its overflow run. Anything else
//! is [`Refusal::Damaged`], never a read outside the map. The layout constants and the
//! little-endian readers are the page checker's ([`crate::online::verify::walk`]).
//!
//! **Cost.** Each accessor is a few bounds checks and loads on one page: O(1), the
//! cost being the cache misses of the page itself, which the batch loop hides by
//! prefetching. [`compare`] compares eight bytes at a time, as LMDB's default order.

use std::cmp::Ordering;

use super::{Refusal, Snapshot};
use crate::online::verify::walk::{
    u16_at, u32_at, u64_at, FIRST_PAGE, F_BIGDATA, NODE_HEADER, PAGE_HEADER, P_BRANCH, P_LEAF,
    P_OVERFLOW,
};

/// One page of the snapshot, its header checked.
#[derive(Clone, Copy)]
pub(super) struct Page<'t> {
    pub(super) b: &'t [u8],
    pub(super) pgno: u64,
    /// Nodes.
    pub(super) n: usize,
}

pub(super) fn damaged<T>(what: String) -> Result<T, Refusal> {
    Err(Refusal::Damaged(what))
}

/// Byte order, then shorter first (LMDB's default `memcmp`-then-length order, the
/// order of `[u8]`), eight bytes at a time: keys are short, and a call to `memcmp`
/// per comparison costs more than the comparison.
#[inline(always)]
pub(super) fn compare(a: &[u8], b: &[u8]) -> Ordering {
    let n = a.len().min(b.len());
    let (mut a8, mut b8) = (a[..n].chunks_exact(8), b[..n].chunks_exact(8));
    for (x, y) in (&mut a8).zip(&mut b8) {
        let x = u64::from_be_bytes(x.try_into().expect("8 bytes"));
        let y = u64::from_be_bytes(y.try_into().expect("8 bytes"));
        if x != y {
            return x.cmp(&y);
        }
    }
    for (x, y) in a8.remainder().iter().zip(b8.remainder()) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

impl<'t> Snapshot<'t> {
    /// Page `pgno`, expected at `level` of the tree being read: a branch page above
    /// the tree's depth, a leaf at it.
    #[inline]
    pub(super) fn page(&self, pgno: u64, level: u16, what: &str) -> Result<Page<'t>, Refusal> {
        if !(FIRST_PAGE..=self.last).contains(&pgno) {
            return damaged(format!(
                "{what} points to page {pgno}, outside pages 2..={}",
                self.last
            ));
        }
        // SAFETY: 2 <= pgno <= last and (last + 1) * psize <= the map's length
        // (checked in `of`), so the page lies inside the map; it belongs to the
        // snapshot of the live transaction `'t` (or is damage, which the checks below
        // turn into an error), and LMDB does not rewrite such pages while it lives.
        let b = unsafe {
            std::slice::from_raw_parts(self.base.add(pgno as usize * self.psize), self.psize)
        };
        let want = if level < self.depth { P_BRANCH } else { P_LEAF };
        let flags = u16_at(b, 10).unwrap_or(0);
        let lower = u16_at(b, 12).unwrap_or(0) as usize;
        if u64_at(b, 0) != Some(pgno)
            || flags != want
            || lower < PAGE_HEADER + 2
            || lower > self.psize
            || !(lower - PAGE_HEADER).is_multiple_of(2)
        {
            return damaged(format!(
                "page {pgno} of {what} has a wrong header (flags {flags:#x}, lower {lower})"
            ));
        }
        Ok(Page {
            b,
            pgno,
            n: (lower - PAGE_HEADER) / 2,
        })
    }

    /// Node `i` of `p`: its offset and key size, both in bounds.
    #[inline]
    pub(super) fn node(&self, p: Page<'t>, i: usize) -> Result<(usize, usize), Refusal> {
        let off = u16_at(p.b, PAGE_HEADER + 2 * i).unwrap_or(0) as usize;
        let ksize = u16_at(p.b, off + 6).unwrap_or(0) as usize;
        if off < PAGE_HEADER + 2 * p.n || off + NODE_HEADER + ksize > self.psize {
            return damaged(format!("page {}: node {i} is outside the page", p.pgno));
        }
        Ok((off, ksize))
    }

    #[inline]
    pub(super) fn key(&self, p: Page<'t>, i: usize) -> Result<&'t [u8], Refusal> {
        let (off, ksize) = self.node(p, i)?;
        Ok(&p.b[off + NODE_HEADER..off + NODE_HEADER + ksize])
    }

    /// Where node `i`'s key starts, for a prefetch (no check: a hint only).
    #[inline]
    pub(super) fn node_addr(p: Page<'t>, i: usize) -> *const u8 {
        let off = u16_at(p.b, PAGE_HEADER + 2 * i).unwrap_or(0) as usize;
        p.b.as_ptr().wrapping_add(off.min(p.b.len() - 1))
    }

    /// The child page number of branch node `i`.
    #[inline]
    pub(super) fn child(&self, p: Page<'t>, i: usize) -> Result<u64, Refusal> {
        let (off, _) = self.node(p, i)?;
        let w = |at| u64::from(u16_at(p.b, off + at).unwrap_or(0));
        Ok(w(0) | w(2) << 16 | w(4) << 32)
    }

    /// The value of leaf node `i` (inline, or in an overflow run).
    pub(super) fn value(&self, p: Page<'t>, i: usize) -> Result<&'t [u8], Refusal> {
        let (off, ksize) = self.node(p, i)?;
        let size = u32_at(p.b, off).unwrap_or(0) as usize;
        let flags = u16_at(p.b, off + 4).unwrap_or(0);
        let at = off + NODE_HEADER + ksize;
        let bad = |d: &str| damaged(format!("page {}, node {i}: {d}", p.pgno));
        match flags {
            0 => match p.b.get(at..at + size) {
                Some(v) => Ok(v),
                None => bad("the value is outside the page"),
            },
            F_BIGDATA => {
                let Some(first) = u64_at(p.b, at) else {
                    return bad("the overflow page number is outside the page");
                };
                if !(FIRST_PAGE..=self.last).contains(&first) {
                    return bad("the overflow page is outside the snapshot");
                }
                // SAFETY: as in `page`: inside the map, part of the live snapshot.
                let head = unsafe {
                    std::slice::from_raw_parts(
                        self.base.add(first as usize * self.psize),
                        PAGE_HEADER,
                    )
                };
                let count = u64::from(u32_at(head, 12).unwrap_or(0));
                if u64_at(head, 0) != Some(first)
                    || u16_at(head, 10) != Some(P_OVERFLOW)
                    || count == 0
                    || first + count - 1 > self.last
                    || (count as usize) * self.psize < PAGE_HEADER + size
                {
                    return bad("its overflow run is malformed");
                }
                // SAFETY: pages first..first + count lie inside the snapshot's pages
                // (checked just above), hence inside the map; the value's bytes are
                // within the run.
                Ok(unsafe {
                    std::slice::from_raw_parts(
                        self.base.add(first as usize * self.psize + PAGE_HEADER),
                        size,
                    )
                })
            }
            _ => bad(&format!("unexpected node flags {flags:#x}")),
        }
    }
}
