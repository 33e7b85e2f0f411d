//! The cursor path of a batch lookup ([`super`]): per distinct entity, in key order,
//! one `MDB_SET_RANGE` to `entity ++ first table id`, then `MDB_NEXT` over the
//! entity's adjacent keys. The fallback and reference of the page walker
//! ([`crate::online::walk`]); one descent per entity (a chain of cache and TLB misses)
//! plus a few steps on the same leaf.

use crate::encode::columns::Encoded;
use crate::encode::key;
use crate::error::Result;
use crate::online::env::Env;
use crate::online::lmdb::{LResult, RoCursor, RoTxn};

/// The cursor path of [`super::lookup_run`]: one `MDB_SET_RANGE` per distinct entity, then
/// `MDB_NEXT` over its adjacent keys.
pub(super) fn cursor_run<'a>(
    env: &Env,
    txn: &'a RoTxn,
    enc: &Encoded,
    order: &[u32],
    ids: &[u32],
    out: &mut [Option<&'a [u8]>],
) -> Result<()> {
    let g = ids.len();
    let mut cursor = txn
        .cursor(env.rows)
        .map_err(|e| env.lmdb_error("read", e))?;
    let mut seek_key = Vec::with_capacity(64);
    for (p, &r) in order.iter().enumerate() {
        let entity = enc.get(r as usize);
        if p > 0 && enc.get(order[p - 1] as usize) == entity {
            let (done, rest) = out.split_at_mut(p * g);
            rest[..g].copy_from_slice(&done[(p - 1) * g..p * g]);
            continue;
        }
        walk(
            &mut cursor,
            entity,
            ids,
            &mut seek_key,
            &mut out[p * g..(p + 1) * g],
        )
        .map_err(|e| env.lmdb_error("read", e))?;
    }
    Ok(())
}

/// Reads the rows of `ids` (ascending) for one entity: one seek, then a walk over the
/// entity's adjacent keys. `out[j]` receives table `ids[j]`'s row.
#[inline]
fn walk<'a>(
    cursor: &mut RoCursor<'a>,
    entity: &[u8],
    ids: &[u32],
    seek_key: &mut Vec<u8>,
    out: &mut [Option<&'a [u8]>],
) -> LResult<()> {
    seek_key.clear();
    seek_key.extend_from_slice(entity);
    key::push_table_id(seek_key, ids[0]);
    let mut at = cursor.seek(seek_key)?;
    let mut j = 0;
    while let Some((k, v)) = at {
        if k.len() != entity.len() + key::TABLE_ID_LEN || !k.starts_with(entity) {
            break; // past this entity (encodings are prefix-free)
        }
        let id = u32::from_be_bytes(k[entity.len()..].try_into().expect("4 bytes"));
        while j < ids.len() && ids[j] < id {
            j += 1;
        }
        if j == ids.len() {
            break;
        }
        if ids[j] == id {
            out[j] = Some(v);
            j += 1;
            if j == ids.len() {
                break;
            }
        }
        at = cursor.step()?;
    }
    Ok(())
}
