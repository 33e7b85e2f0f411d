//! Validation and the matching phase of a join: every check that can fail runs before
//! any heavy work, then each feature table is keyed, sorted and probed.

use arrow_schema::TimeUnit;
use rayon::prelude::*;

use super::kernel::{self, Params, SortedFeatures, SortedSpine};
use super::keys::KeyDict;
use super::time;
use super::{FeatureSpec, JoinSpec};
use crate::error::{Error, Result};
use crate::table::Column;
use crate::trace::phase;

/// The validated columns of a join.
pub struct Plan<'s> {
    spec: &'s JoinSpec,
    unit: TimeUnit,
    spine_time: Column,
    tables: Vec<TablePlan>,
}

struct TablePlan {
    spine_keys: Vec<Column>,
    keys: Vec<Column>,
    time: Column,
    created: Option<Column>,
    ttl_ns: Option<i64>,
}

impl<'s> Plan<'s> {
    pub fn new(spec: &'s JoinSpec) -> Result<Self> {
        let spine = &spec.spine;
        let spine_time = spine.column(&spec.spine_time, "spine_time must name its time column")?;
        let mut units = vec![time::check_temporal(&spine_time, "spine_time")?];
        let mut tables = Vec::with_capacity(spec.features.len());
        for f in &spec.features {
            let tp = table_plan(spec, f)?;
            units.push(time::check_temporal(&tp.time, "feature_time")?);
            if let Some(c) = &tp.created {
                units.push(time::check_temporal(c, "created_time")?);
            }
            tables.push(tp);
        }
        Ok(Plan {
            spec,
            unit: time::finest(units),
            spine_time,
            tables,
        })
    }

    /// Matches every feature table and hands table `j`'s row for each spine row
    /// (`kernel::NO_ROW` where nothing matched) to `then(j, rows)` as soon as it is
    /// known, so one table's gather overlaps the others' matching; returns what `then`
    /// returned, in table order.
    ///
    /// Two stages keep both cores busy: first the spine's grouping runs alongside every
    /// table's keys, times and sort (the spine sort is serial, the rest parallel), then
    /// each table is probed and handed on, the tables concurrently.
    pub fn run<R: Send>(
        &self,
        then: impl Fn(usize, Vec<u32>) -> Result<R> + Sync,
    ) -> Result<Vec<R>> {
        // The spine's times and its key dictionaries (one per distinct set of spine
        // key columns, shared by the tables joined on it) are independent.
        let (spine_t, dicts) = rayon::join(
            || {
                phase("spine times", || {
                    time::to_unit(&self.spine_time, "spine_time", self.unit)
                })
            },
            || {
                let mut dicts: Vec<(&[String], KeyDict)> = Vec::new();
                for (tp, f) in self.tables.iter().zip(&self.spec.features) {
                    if !dicts
                        .iter()
                        .any(|(names, _)| *names == f.spine_keys.as_slice())
                    {
                        let dict = phase("spine keys", || KeyDict::build(&tp.spine_keys))?;
                        dicts.push((&f.spine_keys, dict));
                    }
                }
                Ok::<_, Error>(dicts)
            },
        );
        let (spine_t, dicts) = (spine_t?, dicts?);
        let dict_of = |f: &FeatureSpec| {
            dicts
                .iter()
                .position(|(names, _)| *names == f.spine_keys.as_slice())
                .expect("built above")
        };
        let (spines, sorted) = rayon::join(
            || {
                dicts
                    .iter()
                    .map(|(_, dict)| {
                        phase("spine sort", || {
                            kernel::sort_spine(&dict.ids, dict.n_keys, |i| spine_t.get(i))
                        })
                    })
                    .collect::<Vec<SortedSpine>>()
            },
            || {
                self.tables
                    .par_iter()
                    .zip(&self.spec.features)
                    .map(|(tp, f)| self.sort_table(tp, &dicts[dict_of(f)].1))
                    .collect::<Result<Vec<_>>>()
            },
        );
        let sorted = sorted?;
        drop(spine_t);
        sorted
            .into_par_iter()
            .zip(&self.tables)
            .zip(&self.spec.features)
            .enumerate()
            .map(|(j, ((sorted, tp), f))| {
                let params = Params {
                    allow_exact_matches: self.spec.allow_exact_matches,
                    ttl: tp.ttl_ns.map(|ns| time::duration_in(ns, self.unit)),
                    knowledge_time: self.spec.knowledge_time,
                };
                let spine = &spines[dict_of(f)];
                let rows = phase("probe", || kernel::probe(&sorted, spine, params));
                drop(sorted);
                then(j, rows)
            })
            .collect()
    }

    /// One feature table's rows looked up in `dict`, grouped by key and ordered.
    fn sort_table(&self, tp: &TablePlan, dict: &KeyDict) -> Result<SortedFeatures> {
        let key_ids = phase("feature keys", || dict.lookup(&tp.keys));
        let e = phase("feature times", || {
            time::to_unit(&tp.time, "feature_time", self.unit)
        })?;
        let c = tp
            .created
            .as_ref()
            .map(|c| time::to_unit(c, "created_time", self.unit));
        let c = c.transpose()?;
        Ok(phase("sort", || {
            kernel::sort_features(&key_ids, dict.n_keys, &e.values, c.map(|c| c.values))
        }))
    }
}

fn table_plan(spec: &JoinSpec, f: &FeatureSpec) -> Result<TablePlan> {
    let t = &f.table;
    if f.keys.is_empty() || f.keys.len() != f.spine_keys.len() {
        return Err(Error::InvalidArgument(format!(
            "{}: give one or more key columns, as many on the spine side ({:?}) as on the \
             feature side ({:?})",
            t.name, f.spine_keys, f.keys
        )));
    }
    let rows = t.num_rows();
    if rows >= kernel::NO_ROW as usize {
        return Err(Error::TooManyRows {
            table: t.name.clone(),
            rows,
            max: kernel::NO_ROW as usize - 1,
        });
    }
    let spine_keys = f
        .spine_keys
        .iter()
        .map(|k| {
            spec.spine
                .column(k, "`on` must name key columns present on both sides")
        })
        .collect::<Result<Vec<_>>>()?;
    let keys = f
        .keys
        .iter()
        .map(|k| t.column(k, "`on` must name key columns present on both sides"))
        .collect::<Result<Vec<_>>>()?;
    KeyDict::check_types(&spine_keys, &keys)?;
    let time = t.column(&f.time, "feature_time must name its event-time column")?;
    time::check_temporal(&time, "feature_time")?;
    no_nulls(&time, "the event time (feature_time)")?;
    let created = match &f.created_time {
        Some(name) => {
            let c = t.column(
                name,
                "created_time must name a column of every feature table",
            )?;
            time::check_temporal(&c, "created_time")?;
            no_nulls(&c, "the created time (created_time)")?;
            Some(c)
        }
        None if spec.knowledge_time => {
            return Err(Error::InvalidArgument(format!(
                "knowledge_time=True needs a created_time column for {}; name the column \
                 that says when each row became known",
                t.name
            )))
        }
        None => None,
    };
    if let Some(ttl) = f.ttl_ns {
        if ttl < 0 {
            return Err(Error::InvalidArgument(format!(
                "ttl for {} is negative ({ttl} ns); give a positive duration such as '30d'",
                t.name
            )));
        }
    }
    Ok(TablePlan {
        spine_keys,
        keys,
        time,
        created,
        ttl_ns: f.ttl_ns,
    })
}

/// An error unless `col` has no nulls (`role` says what the column is for).
pub(crate) fn no_nulls(col: &Column, role: &str) -> Result<()> {
    match col.null_count() {
        0 => Ok(()),
        count => Err(Error::NullValues {
            table: col.table.clone(),
            column: col.name().to_string(),
            role: role.to_string(),
            count,
        }),
    }
}
