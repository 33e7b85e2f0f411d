//! The page walk of [`super`]: LMDB's on-disk structures and the checks made on them
//! (the module doc of [`super`] lists them and gives the format).
//!
//! Every read is bounds-checked against the page or the file, nothing is trusted
//! before it is checked, and arbitrary bytes give an error, never a panic (the tests
//! walk thousands of damaged files). Recursion is bounded by the depth the `MDB_db`
//! record gives, itself at most LMDB's cursor stack (32).

use std::cmp::Ordering;

/// `PAGEHDRSZ`: pgno u64, pad u16, flags u16, then lower u16 + upper u16, or the
/// overflow run's page count u32.
pub const PAGE_HEADER: usize = 16;
/// The bytes of `MDB_meta` read (through `mm_txnid`).
pub const META_LEN: usize = 136;
pub const P_BRANCH: u16 = 0x01;
pub const P_LEAF: u16 = 0x02;
pub const P_OVERFLOW: u16 = 0x04;
pub const F_BIGDATA: u16 = 0x01;
pub const F_SUBDATA: u16 = 0x02;
/// `NODESIZE`: lo u16, hi u16, flags u16, key size u16.
pub const NODE_HEADER: usize = 8;
pub const P_INVALID: u64 = u64::MAX;
/// `MDB_MAXKEYSIZE`.
const MAX_KEY: usize = 511;
/// `CURSOR_STACK`: LMDB cannot descend deeper.
pub const MAX_DEPTH: u16 = 32;
const MAGIC: u32 = 0xBEEF_C0DE;
const DATA_VERSION: u32 = 1;
/// `sizeof(MDB_db)`.
pub const DB_RECORD: usize = 48;
/// Meta pages come first; no tree page may be one.
pub const FIRST_PAGE: u64 = 2;

pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// An `MDB_db` record: one B-tree's root and counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbRecord {
    pub pad: u32,
    pub flags: u16,
    pub depth: u16,
    pub branch_pages: u64,
    pub leaf_pages: u64,
    pub overflow_pages: u64,
    pub entries: u64,
    pub root: u64,
}

impl DbRecord {
    pub fn parse(b: &[u8]) -> Option<DbRecord> {
        if b.len() != DB_RECORD {
            return None;
        }
        Some(DbRecord {
            pad: u32_at(b, 0)?,
            flags: u16_at(b, 4)?,
            depth: u16_at(b, 6)?,
            branch_pages: u64_at(b, 8)?,
            leaf_pages: u64_at(b, 16)?,
            overflow_pages: u64_at(b, 24)?,
            entries: u64_at(b, 32)?,
            root: u64_at(b, 40)?,
        })
    }
}

/// The fields of an `MDB_meta` the walk needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub last_pgno: u64,
    pub txnid: u64,
    pub free: DbRecord,
    pub main: DbRecord,
}

impl Meta {
    /// Parses the `META_LEN` bytes after a meta page's header.
    pub fn parse(b: &[u8]) -> Result<Meta, String> {
        let bad = || "a meta page is unreadable".to_string();
        if u32_at(b, 0) != Some(MAGIC) || u32_at(b, 4) != Some(DATA_VERSION) {
            return Err("a meta page lacks LMDB's magic number or version".into());
        }
        let free = DbRecord::parse(b.get(24..72).ok_or_else(bad)?).ok_or_else(bad)?;
        let main = DbRecord::parse(b.get(72..120).ok_or_else(bad)?).ok_or_else(bad)?;
        Ok(Meta {
            page_size: free.pad,
            last_pgno: u64_at(b, 120).ok_or_else(bad)?,
            txnid: u64_at(b, 128).ok_or_else(bad)?,
            free,
            main,
        })
    }
}

/// Counts over the walked snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Pages reached from the meta page (overflow pages included).
    pub pages: u64,
    /// Page numbers listed in the free DB.
    pub free_pages: u64,
    /// Entries of the named databases.
    pub entries: u64,
}

/// Called with (database name, key, value) for every entry of a named database; an
/// error says what is wrong with it.
pub type Visit<'v> = dyn FnMut(&str, &[u8], &[u8]) -> Result<(), String> + 'v;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Free,
    Main,
    Named,
}

#[derive(Default)]
struct Counts {
    branch: u64,
    leaf: u64,
    overflow: u64,
    entries: u64,
}

struct Walker<'a, 'v> {
    file: &'a [u8],
    psize: usize,
    last: u64,
    txnid: u64,
    /// One bit per page: reached from a meta page.
    used: Vec<u64>,
    /// Page numbers the free DB lists.
    free: Vec<u64>,
    /// The main DB's records, walked after it.
    named: Vec<(&'a [u8], DbRecord)>,
    visit: &'v mut Visit<'v>,
    stats: WalkStats,
}

/// Walks the snapshot `meta` describes in `file` (the data file's bytes from offset
/// 0), calling `visit` for each entry of each named database.
pub fn walk<'v>(file: &[u8], meta: &Meta, visit: &'v mut Visit<'v>) -> Result<WalkStats, String> {
    let psize = meta.page_size as usize;
    if !psize.is_power_of_two() || !(512..=65536).contains(&psize) {
        return Err(format!("a meta page gives a page size of {psize}"));
    }
    let pages = (file.len() / psize) as u64;
    if meta.last_pgno < FIRST_PAGE - 1 || meta.last_pgno >= pages {
        return Err(format!(
            "the meta page's last page {} is outside the file's {pages} pages",
            meta.last_pgno
        ));
    }
    let mut w = Walker {
        file,
        psize,
        last: meta.last_pgno,
        txnid: meta.txnid,
        used: vec![0; (meta.last_pgno as usize + 1).div_ceil(64)],
        free: Vec::new(),
        named: Vec::new(),
        visit,
        stats: WalkStats::default(),
    };
    w.tree("the free DB", Kind::Free, &meta.free)?;
    if meta.main.flags != 0 {
        return Err(format!("the main DB has flags {:#x}", meta.main.flags));
    }
    w.tree("the main DB", Kind::Main, &meta.main)?;
    for (name, rec) in std::mem::take(&mut w.named) {
        let label = String::from_utf8_lossy(name).into_owned();
        if rec.flags != 0 || rec.pad != 0 {
            return Err(format!("database '{label}' has flags {:#x}", rec.flags));
        }
        w.tree(&label, Kind::Named, &rec)?;
    }
    let mut listed = vec![0u64; w.used.len()];
    for &pgno in &w.free {
        let (word, bit) = ((pgno / 64) as usize, 1u64 << (pgno % 64));
        if w.used[word] & bit != 0 {
            return Err(format!("page {pgno} is in the free list and in use"));
        }
        if listed[word] & bit != 0 {
            return Err(format!("page {pgno} is in the free list twice"));
        }
        listed[word] |= bit;
    }
    w.stats.free_pages = w.free.len() as u64;
    Ok(w.stats)
}

impl<'a> Walker<'a, '_> {
    /// Marks page `pgno` reached, refusing one out of bounds or reached before.
    fn claim(&mut self, pgno: u64, what: &str) -> Result<(), String> {
        if !(FIRST_PAGE..=self.last).contains(&pgno) {
            return Err(format!(
                "{what} points to page {pgno}, outside pages 2..={}",
                self.last
            ));
        }
        let (word, bit) = ((pgno / 64) as usize, 1u64 << (pgno % 64));
        if self.used[word] & bit != 0 {
            return Err(format!("page {pgno} is reached twice (in {what})"));
        }
        self.used[word] |= bit;
        self.stats.pages += 1;
        Ok(())
    }

    /// The bytes of pages `pgno..pgno + n` (in bounds: `claim`ed).
    fn pages(&self, pgno: u64, n: u64) -> &'a [u8] {
        let start = pgno as usize * self.psize;
        &self.file[start..start + n as usize * self.psize]
    }

    fn tree(&mut self, what: &str, kind: Kind, rec: &DbRecord) -> Result<(), String> {
        if rec.root == P_INVALID {
            let empty = DbRecord {
                pad: rec.pad,
                flags: rec.flags,
                root: P_INVALID,
                ..DbRecord::default()
            };
            return if *rec == empty {
                Ok(())
            } else {
                Err(format!("{what} has no root but nonzero counts"))
            };
        }
        if rec.depth == 0 || rec.depth > MAX_DEPTH {
            return Err(format!("{what} has depth {}", rec.depth));
        }
        let mut counts = Counts::default();
        self.page(
            what,
            kind,
            rec.root,
            1,
            rec.depth,
            (None, None),
            &mut counts,
        )?;
        let found = [counts.branch, counts.leaf, counts.overflow, counts.entries];
        let recorded = [
            rec.branch_pages,
            rec.leaf_pages,
            rec.overflow_pages,
            rec.entries,
        ];
        if found != recorded {
            return Err(format!(
                "{what} records {recorded:?} branch/leaf/overflow pages/entries, its tree \
                 has {found:?}"
            ));
        }
        if kind == Kind::Named {
            self.stats.entries += counts.entries;
        }
        Ok(())
    }

    /// Checks the branch or leaf page `pgno` at `level` (1 = root) of a tree of
    /// `depth` levels whose keys must lie in `[bounds.0, bounds.1)`, and below it.
    #[allow(clippy::too_many_arguments)]
    fn page(
        &mut self,
        what: &str,
        kind: Kind,
        pgno: u64,
        level: u16,
        depth: u16,
        bounds: (Option<&'a [u8]>, Option<&'a [u8]>),
        counts: &mut Counts,
    ) -> Result<(), String> {
        self.claim(pgno, what)?;
        let p = self.pages(pgno, 1);
        let err = |detail: String| Err(format!("page {pgno} of {what}: {detail}"));
        let branch = level < depth;
        let stored = u64_at(p, 0).unwrap_or(0);
        if stored != pgno {
            return err(format!("it holds page number {stored}"));
        }
        let flags = u16_at(p, 10).unwrap_or(0);
        let want = if branch { P_BRANCH } else { P_LEAF };
        if flags != want {
            return err(format!(
                "flags {flags:#x} where a {} page (flags {want:#x}) belongs",
                if branch { "branch" } else { "leaf" }
            ));
        }
        let lower = u16_at(p, 12).unwrap_or(0) as usize;
        let upper = u16_at(p, 14).unwrap_or(0) as usize;
        if lower < PAGE_HEADER || !(lower - PAGE_HEADER).is_multiple_of(2) || lower > upper {
            return err(format!("free space bounds {lower}..{upper}"));
        }
        if upper > self.psize {
            return err(format!("free space ends at {upper}, past the page"));
        }
        let n = (lower - PAGE_HEADER) / 2;
        let min = if branch && kind != Kind::Free { 2 } else { 1 };
        if n < min {
            return err(format!("{n} node(s)"));
        }
        // Pass 1: every node in bounds, the nodes filling [upper, page end), keys in
        // order and within the bounds.
        let mut filled = 0usize;
        let mut prev: Option<&'a [u8]> = None;
        for i in 0..n {
            let node = self
                .node(p, i, branch)
                .map_err(|d| format!("page {pgno} of {what}: {d}"))?;
            if node.offset < upper {
                return err(format!(
                    "node {i} at {} overlaps the free space",
                    node.offset
                ));
            }
            filled += node.size.div_ceil(2) * 2;
            if branch && i == 0 {
                continue; // a branch's first key is not used
            }
            let k = node.key;
            let key_ok = match kind {
                Kind::Free => k.len() == 8,
                _ => (1..=MAX_KEY).contains(&k.len()),
            };
            if !key_ok {
                return err(format!("node {i} has a key of {} bytes", k.len()));
            }
            let order = |a: &[u8], b: &[u8]| compare(kind, a, b);
            if prev.is_some_and(|p| order(p, k) != Ordering::Less)
                || bounds.0.is_some_and(|lo| order(lo, k) == Ordering::Greater)
                || bounds.1.is_some_and(|hi| order(k, hi) != Ordering::Less)
            {
                return err(format!("node {i}'s key is out of order"));
            }
            prev = Some(k);
        }
        if filled != self.psize - upper {
            return err(format!(
                "its nodes take {filled} bytes, the space after its free space {}",
                self.psize - upper
            ));
        }
        if branch {
            counts.branch += 1;
            for i in 0..n {
                let node = self.node(p, i, true)?;
                let lo = if i == 0 { bounds.0 } else { Some(node.key) };
                let hi = if i + 1 < n {
                    Some(self.node(p, i + 1, true)?.key)
                } else {
                    bounds.1
                };
                self.page(what, kind, node.child, level + 1, depth, (lo, hi), counts)?;
            }
            return Ok(());
        }
        counts.leaf += 1;
        for i in 0..n {
            let node = self.node(p, i, false)?;
            if (kind == Kind::Main) != (node.flags == F_SUBDATA) {
                return err(format!("node {i} has flags {:#x}", node.flags));
            }
            counts.entries += 1;
            let value = if node.flags & F_BIGDATA != 0 {
                let first = u64_at(node.data, 0).unwrap_or(0);
                self.overflow(what, first, node.data_size, counts)?
            } else {
                node.data
            };
            match kind {
                Kind::Free => self.free_list(what, node.key, value)?,
                Kind::Main => {
                    let rec = DbRecord::parse(value)
                        .ok_or_else(|| format!("{what}: record '{:?}' unreadable", node.key))?;
                    self.named.push((node.key, rec));
                }
                Kind::Named => (self.visit)(what, node.key, value)
                    .map_err(|d| format!("database '{what}': {d}"))?,
            }
        }
        Ok(())
    }

    /// Node `i` of page `p`, every part in bounds. A branch node's child is only
    /// range-checked when claimed; a leaf node's flags are checked here.
    fn node(&self, p: &'a [u8], i: usize, branch: bool) -> Result<Node<'a>, String> {
        let offset = u16_at(p, PAGE_HEADER + 2 * i).unwrap_or(0) as usize;
        let bad = |d: &str| Err(format!("node {i} at {offset}: {d}"));
        if !offset.is_multiple_of(2) || offset < PAGE_HEADER || offset + NODE_HEADER > p.len() {
            return bad("offset outside the page");
        }
        let lo = u16_at(p, offset).unwrap_or(0);
        let hi = u16_at(p, offset + 2).unwrap_or(0);
        let flags = u16_at(p, offset + 4).unwrap_or(0);
        let ksize = u16_at(p, offset + 6).unwrap_or(0) as usize;
        let key_end = offset + NODE_HEADER + ksize;
        let Some(key) = p.get(offset + NODE_HEADER..key_end) else {
            return bad("key past the end of the page");
        };
        if branch {
            let child = u64::from(lo) | u64::from(hi) << 16 | u64::from(flags) << 32;
            return Ok(Node {
                offset,
                size: NODE_HEADER + ksize,
                key,
                flags: 0,
                child,
                data: &[],
                data_size: 0,
            });
        }
        let data_size = u32::from(lo) | u32::from(hi) << 16;
        let inline = match flags {
            0 => data_size as usize,
            F_BIGDATA => 8,
            F_SUBDATA if data_size as usize == DB_RECORD => DB_RECORD,
            _ => return bad(&format!("flags {flags:#x}, size {data_size}")),
        };
        let Some(data) = p.get(key_end..key_end + inline) else {
            return bad("value past the end of the page");
        };
        Ok(Node {
            offset,
            size: NODE_HEADER + ksize + inline,
            key,
            flags,
            child: 0,
            data,
            data_size: data_size as usize,
        })
    }

    /// The value held by the overflow run starting at page `first`.
    fn overflow(
        &mut self,
        what: &str,
        first: u64,
        size: usize,
        counts: &mut Counts,
    ) -> Result<&'a [u8], String> {
        self.claim(first, what)?;
        let p = self.pages(first, 1);
        let err = |d: String| Err(format!("overflow page {first} of {what}: {d}"));
        if u64_at(p, 0) != Some(first) || u16_at(p, 10) != Some(P_OVERFLOW) {
            return err("not an overflow page".into());
        }
        let n = u64::from(u32_at(p, 12).unwrap_or(0));
        let need = ((PAGE_HEADER - 1 + size) / self.psize + 1) as u64;
        let last = first + n.max(1) - 1;
        if n < need || last > self.last {
            return err(format!("a run of {n} page(s) for {size} bytes"));
        }
        for pgno in first + 1..=last {
            self.claim(pgno, what)?;
        }
        counts.overflow += n;
        let run = self.pages(first, n);
        Ok(&run[PAGE_HEADER..PAGE_HEADER + size])
    }

    /// A free DB record: key a txnid, value a page count then that many page numbers.
    fn free_list(&mut self, what: &str, key: &[u8], value: &[u8]) -> Result<(), String> {
        let txnid = u64_at(key, 0).unwrap_or(0);
        if txnid == 0 || txnid > self.txnid {
            return Err(format!("{what} has a record of transaction {txnid}"));
        }
        let words = value.len() / 8;
        let count = u64_at(value, 0).unwrap_or(u64::MAX);
        if !value.len().is_multiple_of(8) || words == 0 || count > (words - 1) as u64 {
            return Err(format!(
                "{what}: the record of transaction {txnid} is malformed"
            ));
        }
        for i in 0..count as usize {
            let pgno = u64_at(value, 8 + 8 * i).unwrap_or(0);
            if !(FIRST_PAGE..=self.last).contains(&pgno) {
                return Err(format!("{what} lists page {pgno}, outside the file"));
            }
            self.free.push(pgno);
        }
        Ok(())
    }
}

struct Node<'a> {
    offset: usize,
    /// Header, key and inline value: what the node takes in its page (before
    /// rounding up to even).
    size: usize,
    key: &'a [u8],
    flags: u16,
    /// A branch node's child page.
    child: u64,
    /// A leaf node's inline value (the overflow page number with `F_BIGDATA`).
    data: &'a [u8],
    /// A leaf node's value size.
    data_size: usize,
}

/// Key order: byte order, or in the free DB (`MDB_INTEGERKEY`) native u64 order.
fn compare(kind: Kind, a: &[u8], b: &[u8]) -> Ordering {
    match (kind, u64_at(a, 0), u64_at(b, 0)) {
        (Kind::Free, Some(x), Some(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}
