//! Batch lookups that read LMDB's B-tree pages straight from the memory map, many
//! keys at a time: the fast path of [`super::read`], whose cursor path
//! (`MDB_SET_RANGE` + `MDB_NEXT` per entity) stays the fallback and the reference.
//!
//! **Why.** A lookup's cost is its chain of dependent cache and TLB misses (one per
//! level of the tree, then a few inside the leaf), ~2 µs per entity on this machine
//! for a large store; through the cursor, each entity waits for its own chain. Here
//! the entities of a request (already sorted) descend together: each round gives
//! every unfinished key one step of its binary search, and after the step prefetches
//! the node (or the child page) that key will read next, so the misses of up to
//! [`WINDOW`] keys are in flight at once instead of one after another (group
//! prefetching, "AMAC"). The work per key is the same as LMDB's (one binary search
//! per level, then a scan over the entity's adjacent rows); what changes is that the
//! memory latency overlaps.
//!
//! **Algorithm.** Per request: take the snapshot of the caller's read transaction
//! ([`Snapshot::of`]), then for each window of entities, probe `entity ++ first
//! table id`: in a branch page, the last node whose key is <= the probe (the first
//! node's key counts as -inf); in the leaf, the first node >= the probe. The upper
//! levels (all but the last two), whose few pages every key shares and which stay
//! cached, are searched and descended in one step; the last branch level and the
//! leaves (hundreds of MB for a large store: each page a cache and TLB miss) take one
//! binary-search probe per round, with the next node (or the child page's header and
//! node offsets) prefetched. As soon as a probe rests on its leaf, the nodes of its
//! entity's rows are prefetched (spread over the rounds: requested in one burst after
//! the last round, they still missed in the scans, and requests took ~10% longer).
//! Once every probe is done, sequentially, each entity's scan
//! goes forward from its node for `entity ++ id` of each wanted table id (ascending,
//! like the keys); when a scan runs off the end of the leaf, the next wanted key is
//! looked up with a fresh descent of its own (rare: the rows of one entity share a
//! leaf unless a page boundary falls between them). A value stored in an overflow
//! run (`F_BIGDATA`, larger than about half a page) is read from the run's pages.
//! Keys are compared eight bytes at a time ([`compare`], LMDB's default order).
//!
//! **Cost.** Per entity the same comparisons as LMDB (log2 of the page's nodes per
//! level) plus a bounds check per page and node read; the memory latency of a
//! window is about `2 + log2(nodes per branch) + log2(nodes per leaf)` rounds of
//! overlapped misses instead of that many misses per entity, one after another.
//! Taking the snapshot costs one `mdb_get` (to find the map, see [`Snapshot::map_base`]), a
//! read of the meta page and a descent of the main DB (a page or two), once per
//! request and transaction. Measured (BENCHMARKS.md, 1M entities x 3 tables, a
//! rows tree of depth 4 with 129k leaves, 100 entities per request, from Python): a
//! request takes 121 µs instead of 198 µs through the cursor; the walk is then
//! bound by its outstanding misses (leaf pages, each a cache and TLB miss).
//!
//! **Which snapshot.** A read transaction reads the meta page whose `mm_txnid` is its
//! id (`me_metas[id & 1]` in `mdb_txn_renew0`; with `MDB_NOLOCK` the newest one,
//! which has that id too) and looks its named databases up in the main DB of that
//! meta (a named database's record is stale at the start of a read transaction and
//! re-read from the main DB on first use). [`Snapshot::of`] does the same from the
//! map: the meta page in slot `id & 1` (copied with volatile reads, then its txnid
//! read again: a writer rewrites that slot two commits later, and a copy that may mix
//! two metas is refused), the main DB's root from it, and the `rows` record from the
//! main DB's leaf. The pages of that snapshot are never rewritten while the
//! transaction lives, so the page slices handed out stay valid and unchanged for its
//! lifetime `'t` (like LMDB's own values); the map cannot move meanwhile either
//! (this process only resizes it with no transaction active, see [`super::env`]).
//! LMDB does not publish the map's address; [`Snapshot::map_base`] derives it from a value
//! the transaction returns.
//!
//! **Trust.** The format is LMDB 0.9's (0.9.70 as bundled by `lmdb-master-sys`
//! 0.2.6, pinned exactly in Cargo.toml; mdb.master3 / 1.0 pages differ): the layout
//! is documented in [`super::verify`], whose constants and parsers this module
//! shares. Anything this walker does not expect in a sound file (magic, version,
//! page size, txnid, database flags, a map that does not cover the snapshot's pages)
//! makes it step aside ([`Refusal::Fallback`]) and the cursor path runs instead.
//! Every page number is checked against the snapshot's last page and every offset
//! and size against its page before use, and a page whose flags, bounds or nodes are
//! wrong is a [`Refusal::Damaged`] (a `CorruptStoreError`), never a read outside the
//! map: pages written after the check on open ([`super::verify`]) were never checked
//! by anyone else.
//!
//! `PITSTOP_ONLINE_WALK=0` in the environment (read when a read is planned) selects
//! the cursor path, for comparisons; tests pick either through
//! [`super::read::ReadPlan::set_walk`].
//!
//! This file holds the snapshot and the batch loop; reading one page, node, key or
//! value with its checks, and the key order, are in `walk_page.rs`; the prefetch is
//! [`crate::prefetch`].

use std::cmp::Ordering;
use std::marker::PhantomData;

use super::catalog;
use super::env::Env;
use super::lmdb::RoTxn;
use super::verify::walk::{
    u16_at, DbRecord, Meta, DB_RECORD, FIRST_PAGE, F_SUBDATA, MAX_DEPTH, META_LEN, NODE_HEADER,
    PAGE_HEADER, P_INVALID,
};
use crate::encode::columns::Encoded;
use crate::prefetch::prefetch;

// Reading one page, node, key or value of the snapshot; the key order; prefetching.
#[path = "walk_page.rs"]
mod page;
use page::{compare, damaged, Page};

/// Keys descended together: enough to keep the memory system busy, few enough that
/// the lines prefetched for a round are still cached when their key's turn comes.
pub const WINDOW: usize = 128;

/// Cache lines prefetched per row before the scans: the node header, key and the
/// start of the value (a row of 20 float32 features spans about three).
const PREFETCH_LINES: usize = 3;

/// Why the walker did not answer.
#[derive(Debug)]
pub enum Refusal {
    /// Something it does not handle or cannot trust to be current: use the cursor.
    Fallback(&'static str),
    /// A page of the snapshot is damaged: what is wrong.
    Damaged(String),
}

/// The `rows` B-tree of one read transaction's snapshot, read from the memory map.
pub struct Snapshot<'t> {
    /// The map's first byte: page `p` starts `p * psize` bytes on.
    base: *const u8,
    psize: usize,
    /// The snapshot's last page; every page number read is checked against it.
    last: u64,
    /// The rows database's root (`P_INVALID` when empty) and depth.
    root: u64,
    depth: u16,
    _txn: PhantomData<&'t RoTxn>,
}

/// A key's descent: the page it searches (entered a round after its page number is
/// known, so that the prefetch of the page has had time) and its search bounds.
#[derive(Clone, Copy)]
struct Probe<'t> {
    page: Option<Page<'t>>,
    next: u64,
    level: u16,
    lo: usize,
    hi: usize,
}

impl<'t> Snapshot<'t> {
    /// The snapshot `txn` reads, or why not (see the module doc).
    pub fn of(env: &Env, txn: &'t RoTxn) -> Result<Snapshot<'t>, Refusal> {
        let raw = env.raw_env();
        let info = raw.info();
        let psize = raw.page_size();
        let map_len = info.me_mapsize;
        let id = txn.id() as u64;
        // SAFETY: sysconf has no preconditions.
        let os_page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if os_page != psize as libc::c_long || !(512..=65536).contains(&psize) {
            return Err(Refusal::Fallback(
                "LMDB's page size is not the OS page size",
            ));
        }
        let base = Self::map_base(env, txn, psize, info.me_last_pgno as u64, map_len)?;
        let slot = (id & 1) as usize * psize;
        if slot + PAGE_HEADER + META_LEN > map_len {
            return Err(Refusal::Fallback("the map is smaller than the meta pages"));
        }
        let mut copy = [0u8; META_LEN];
        // SAFETY: the meta page lies inside the map (checked just above) and inside the
        // file (LMDB checked the file's meta pages when it opened it). A writer may be
        // rewriting it: the bytes are copied with volatile reads, never referenced, and
        // the copy is used only if the txnid is unchanged afterwards.
        let meta_at = unsafe { base.add(slot + PAGE_HEADER) };
        for (i, b) in copy.iter_mut().enumerate() {
            // SAFETY: as above, `i < META_LEN`.
            *b = unsafe { std::ptr::read_volatile(meta_at.add(i)) };
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        let mut again = [0u8; 8];
        for (i, b) in again.iter_mut().enumerate() {
            // SAFETY: as above; mm_txnid is the last 8 of the META_LEN bytes.
            *b = unsafe { std::ptr::read_volatile(meta_at.add(META_LEN - 8 + i)) };
        }
        let Ok(meta) = Meta::parse(&copy) else {
            return Err(Refusal::Fallback("the meta page is not LMDB 0.9's"));
        };
        if meta.txnid != id || u64::from_le_bytes(again) != id {
            return Err(Refusal::Fallback("the meta page was rewritten"));
        }
        if meta.page_size as usize != psize || meta.main.flags != 0 {
            return Err(Refusal::Fallback("unexpected page size or main DB flags"));
        }
        if (meta.last_pgno as usize)
            .saturating_add(1)
            .saturating_mul(psize)
            > map_len
        {
            return Err(Refusal::Fallback("the map does not cover the snapshot"));
        }
        let mut snap = Snapshot {
            base,
            psize,
            last: meta.last_pgno,
            root: meta.main.root,
            depth: meta.main.depth,
            _txn: PhantomData,
        };
        let rows = snap.rows_record()?;
        if rows.flags != 0 || rows.pad != 0 {
            return Err(Refusal::Fallback("the rows database has flags"));
        }
        snap.root = rows.root;
        snap.depth = rows.depth;
        if snap.root != P_INVALID && !(1..=MAX_DEPTH).contains(&snap.depth) {
            return damaged(format!("the rows database has depth {}", snap.depth));
        }
        Ok(snap)
    }

    /// The address of LMDB's map, which LMDB does not publish (`mdb_env_info`'s
    /// `me_mapaddr` is the fixed address asked for with `MDB_FIXEDMAP`, null otherwise):
    /// taken from a value LMDB returns in `txn` (the format marker of the `meta`
    /// database), which lies in the map, inside a page the map starts a whole number of
    /// pages before (the map is aligned to the OS page, which is LMDB's page): that
    /// page's header holds its number. The page belongs to `txn`'s snapshot and is one
    /// LMDB itself reads on every request (the catalog), so it is trusted as LMDB trusts
    /// it; its number is still checked against the environment's last page.
    fn map_base(
        env: &Env,
        txn: &RoTxn,
        psize: usize,
        last: u64,
        map_len: usize,
    ) -> Result<*const u8, Refusal> {
        let value = match txn.get(env.meta, catalog::FORMAT_KEY) {
            Ok(Some(v)) if !v.is_empty() => v,
            _ => return Err(Refusal::Fallback("no format marker to find the map by")),
        };
        let page = (value.as_ptr() as usize) & !(psize - 1);
        // SAFETY: `value` is a non-empty slice LMDB returned for the live read transaction
        // `txn`: it lies in the map, and the map consists of whole OS pages (= `psize`
        // bytes, checked by the caller), so the `psize`-aligned page holding its first byte
        // is mapped too; its first 8 bytes are the page's number.
        let pgno = unsafe { std::ptr::read_unaligned(page as *const u64) };
        let from_base = (pgno as usize).wrapping_mul(psize);
        if !(FIRST_PAGE..=last).contains(&pgno) || page < from_base {
            return Err(Refusal::Fallback("the map's address could not be found"));
        }
        if from_base + psize > map_len {
            return Err(Refusal::Fallback("the map is smaller than its pages"));
        }
        Ok((page - from_base) as *const u8)
    }

    /// The `rows` record in the main DB (whose root and depth `self` holds now).
    fn rows_record(&self) -> Result<DbRecord, Refusal> {
        if self.root == P_INVALID {
            return Err(Refusal::Fallback("the main DB is empty"));
        }
        if !(1..=MAX_DEPTH).contains(&self.depth) {
            return damaged(format!("the main DB has depth {}", self.depth));
        }
        let (leaf, i) = self.descend(b"rows", "the main DB")?;
        if i == leaf.n || self.key(leaf, i)? != b"rows" {
            return Err(Refusal::Fallback("no rows database in the snapshot"));
        }
        let (off, ksize) = self.node(leaf, i)?;
        let flags = u16_at(leaf.b, off + 4).unwrap_or(0);
        let size = u16_at(leaf.b, off).unwrap_or(0) as usize
            | (u16_at(leaf.b, off + 2).unwrap_or(0) as usize) << 16;
        let at = off + NODE_HEADER + ksize;
        match leaf.b.get(at..at + DB_RECORD).and_then(DbRecord::parse) {
            Some(rec) if flags == F_SUBDATA && size == DB_RECORD => Ok(rec),
            _ => damaged(format!(
                "page {} of the main DB: the rows record is malformed",
                leaf.pgno
            )),
        }
    }

    fn start(&self) -> Probe<'t> {
        Probe {
            page: None,
            next: self.root,
            level: 1,
            lo: 0,
            hi: 0,
        }
    }

    /// One step of `pr`'s descent towards `target`; true once it rests on a leaf with
    /// `lo` the first node >= `target`.
    #[inline]
    fn step(&self, pr: &mut Probe<'t>, target: &[u8], what: &str) -> Result<bool, Refusal> {
        loop {
            // The pages of the upper levels are shared by every key and stay cached: they
            // are searched, and descended through, in one step; the last two levels
            // take one probe per round.
            let whole = pr.level + 1 < self.depth;
            let p = match pr.page {
                Some(p) => p,
                None => {
                    let p = self.page(pr.next, pr.level, what)?;
                    pr.page = Some(p);
                    (pr.lo, pr.hi) = (usize::from(pr.level < self.depth), p.n);
                    if !whole {
                        if pr.lo < pr.hi {
                            prefetch(Self::node_addr(p, (pr.lo + pr.hi) / 2));
                        }
                        return Ok(false);
                    }
                    p
                }
            };
            let branch = pr.level < self.depth;
            while pr.lo < pr.hi {
                let mid = (pr.lo + pr.hi) / 2;
                let order = compare(self.key(p, mid)?, target);
                if order == Ordering::Less || (branch && order == Ordering::Equal) {
                    pr.lo = mid + 1;
                } else {
                    pr.hi = mid;
                }
                if !whole && pr.lo < pr.hi {
                    prefetch(Self::node_addr(p, (pr.lo + pr.hi) / 2));
                    return Ok(false);
                }
            }
            if !branch {
                return Ok(true);
            }
            let child = self.child(p, pr.lo - 1)?;
            pr.page = None;
            pr.next = child;
            pr.level += 1;
            if pr.level > self.depth {
                return damaged(format!("{what} is deeper than its depth"));
            }
            if (FIRST_PAGE..=self.last).contains(&child) {
                // The header and the start of the node offsets; a branch page's offsets
                // (two bytes per child, ~200 children) span more lines.
                let at = self.base.wrapping_add(child as usize * self.psize);
                let lines = if pr.level < self.depth { 6 } else { 2 };
                for line in 0..lines {
                    prefetch(at.wrapping_add(64 * line));
                }
            }
            if pr.level + 1 >= self.depth {
                return Ok(false);
            }
        }
    }

    /// The nodes the scan of finished probe `pr` will read (its entity's rows are the
    /// `g` nodes from where it ended, anywhere in the page), requested as soon as they
    /// are known.
    #[inline]
    fn prefetch_rows(pr: &Probe<'t>, g: usize) {
        if let Some(page) = pr.page {
            for k in pr.lo..(pr.lo + g).min(page.n) {
                let at = Self::node_addr(page, k);
                for line in 0..PREFETCH_LINES {
                    prefetch(at.wrapping_add(64 * line));
                }
            }
        }
    }

    /// One key's descent on its own: the leaf and the first node >= `target`.
    fn descend(&self, target: &[u8], what: &str) -> Result<(Page<'t>, usize), Refusal> {
        let mut pr = self.start();
        while !self.step(&mut pr, target, what)? {}
        Ok((pr.page.expect("a finished probe rests on a page"), pr.lo))
    }

    /// Looks up the entities `order` (indices into `enc`, sorted by encoding) in the
    /// tables whose big-endian ids are `ids` (ascending): `out[p * ids.len() + j]`
    /// receives the row of entity `order[p]` in table `ids[j]`, None if it has none.
    pub fn lookup(
        &self,
        enc: &Encoded,
        order: &[u32],
        ids: &[[u8; 4]],
        out: &mut [Option<&'t [u8]>],
    ) -> Result<(), Refusal> {
        const WHAT: &str = "the rows database";
        let g = ids.len();
        debug_assert_eq!(out.len(), order.len() * g);
        if self.root == P_INVALID || g == 0 {
            return Ok(()); // an empty database: every row missing
        }
        let mut targets: Vec<u8> = Vec::with_capacity(WINDOW * 32);
        let mut ends: Vec<usize> = Vec::with_capacity(WINDOW + 1);
        let mut probes: Vec<Probe<'t>> = Vec::with_capacity(WINDOW);
        let mut key = Vec::with_capacity(64);
        for (w, window) in order.chunks(WINDOW).enumerate() {
            let first = w * WINDOW;
            targets.clear();
            ends.clear();
            ends.push(0);
            probes.clear();
            for &r in window {
                targets.extend_from_slice(enc.get(r as usize));
                targets.extend_from_slice(&ids[0]);
                ends.push(targets.len());
                probes.push(self.start());
            }
            // The descents, interleaved: one step per unfinished key per round.
            let mut left = window.len();
            let mut done = vec![false; window.len()];
            while left > 0 {
                for (i, pr) in probes.iter_mut().enumerate() {
                    if !done[i] && self.step(pr, &targets[ends[i]..ends[i + 1]], WHAT)? {
                        done[i] = true;
                        left -= 1;
                        Self::prefetch_rows(pr, g);
                    }
                }
            }
            // The scans, one entity after another.
            for (i, &r) in window.iter().enumerate() {
                let p = first + i;
                let entity = enc.get(r as usize);
                if p > 0 && enc.get(order[p - 1] as usize) == entity {
                    let (prev, rest) = out.split_at_mut(p * g);
                    rest[..g].copy_from_slice(&prev[(p - 1) * g..]);
                    continue;
                }
                let pr = probes[i];
                let leaf = pr.page.expect("a finished probe rests on a page");
                self.scan(
                    leaf,
                    pr.lo,
                    entity,
                    ids,
                    &mut key,
                    &mut out[p * g..(p + 1) * g],
                )?;
            }
        }
        Ok(())
    }

    /// From node `at` of `leaf` (the first >= `entity ++ ids[0]`), the rows of
    /// `entity ++ ids[j]` into `out[j]`, descending again if they run past the leaf.
    fn scan(
        &self,
        mut leaf: Page<'t>,
        mut at: usize,
        entity: &[u8],
        ids: &[[u8; 4]],
        key: &mut Vec<u8>,
        out: &mut [Option<&'t [u8]>],
    ) -> Result<(), Refusal> {
        const WHAT: &str = "the rows database";
        // The id whose key the current leaf was descended for: past that leaf's end,
        // that key is absent; a later one may be on a following leaf.
        let mut descended_for = 0;
        for (j, id) in ids.iter().enumerate() {
            key.clear();
            key.extend_from_slice(entity);
            key.extend_from_slice(id);
            loop {
                while at < leaf.n && compare(self.key(leaf, at)?, key) == Ordering::Less {
                    at += 1;
                }
                if at < leaf.n || descended_for == j {
                    break;
                }
                (leaf, at) = self.descend(key, WHAT)?;
                descended_for = j;
            }
            if at < leaf.n && compare(self.key(leaf, at)?, key) == Ordering::Equal {
                out[j] = Some(self.value(leaf, at)?);
                at += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "walk_tests.rs"]
mod tests;
