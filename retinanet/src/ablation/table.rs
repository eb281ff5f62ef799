//! The results of the grid as the paper lays them out — a Markdown file with its
//! Table 1a (α-balanced cross-entropy: α → AP, AP50, AP75) and Table 1b (focal loss:
//! γ, α → AP, AP50, AP75) — and a CSV with every number of every cell.
//!
//! The paper's Table 1b lists only the best α of each γ; here every cell is listed and
//! the best ones are marked:
//!
//! - a **bold α** is the best α of its γ (highest AP, ties broken by AP50, then by the
//!   order of the grid);
//! - a **fully bold row** is the best row of its table.
//!
//! Like the paper's, Table 1b opens with the best α-balanced CE row (γ = 0), so the
//! focal-loss rows can be read against it. Numbers are COCO AP × 100 with one decimal,
//! as in the paper; the column "paper AP" repeats the paper's value where it reports that
//! exact setting.

use std::fmt::Write as _;

use focal_data::STAT_NAMES;

use super::record::CellRecord;
use super::setting::{Grid, Setting};

/// The paper's Table 1a and 1b (arXiv:1708.02002v2), AP × 100 of ResNet-50-FPN at 600 px
/// on COCO minival: (γ, α, AP, AP50, AP75). Table 1b gives only the best α of each γ.
pub const PAPER: [(f32, f32, f64, f64, f64); 13] = [
    // Table 1a: α-balanced CE.
    (0.0, 0.10, 0.0, 0.0, 0.0),
    (0.0, 0.25, 10.8, 16.0, 11.7),
    (0.0, 0.50, 30.2, 46.7, 32.8),
    (0.0, 0.75, 31.1, 49.4, 33.0),
    (0.0, 0.90, 30.8, 49.7, 32.3),
    (0.0, 0.99, 28.7, 47.4, 29.9),
    (0.0, 0.999, 25.1, 41.7, 26.1),
    // Table 1b: FL, best α per γ.
    (0.1, 0.75, 31.4, 49.9, 33.1),
    (0.2, 0.75, 31.9, 50.7, 33.4),
    (0.5, 0.50, 32.9, 51.7, 35.2),
    (1.0, 0.25, 33.7, 52.0, 36.2),
    (2.0, 0.25, 34.0, 52.5, 36.5),
    (5.0, 0.25, 32.2, 49.6, 34.8),
];

/// The paper's AP × 100 for exactly this setting, if it reports one.
pub fn paper_ap(s: &Setting) -> Option<f64> {
    PAPER
        .iter()
        .find(|p| p.0 == s.gamma && p.1 == s.alpha)
        .map(|p| p.2)
}

/// The finished runs of one loss (γ, α): its record, or one per seed of the grid.
#[derive(Clone, Debug)]
struct Runs<'a> {
    /// One entry per seed of the grid (one entry without seeds); `None`: not finished.
    by_seed: Vec<Option<&'a CellRecord>>,
}

impl<'a> Runs<'a> {
    fn of(grid: &Grid, records: &'a [CellRecord], loss: &Setting) -> Runs<'a> {
        let find = |s: Setting| records.iter().find(|r| r.setting() == s);
        let by_seed = if grid.seeds.is_empty() {
            vec![find(*loss)]
        } else {
            grid.seeds
                .iter()
                .map(|&seed| {
                    find(Setting {
                        seed: Some(seed),
                        ..*loss
                    })
                })
                .collect()
        };
        Runs { by_seed }
    }

    fn finished(&self) -> Vec<&'a CellRecord> {
        self.by_seed.iter().flatten().copied().collect()
    }

    /// The mean of `f` over the finished runs; `None` when none is.
    fn mean(&self, f: impl Fn(&CellRecord) -> f64) -> Option<f64> {
        let done = self.finished();
        (!done.is_empty()).then(|| done.iter().map(|r| f(r)).sum::<f64>() / done.len() as f64)
    }

    /// Largest minus smallest AP of the finished runs, when two or more are.
    fn ap_spread(&self) -> Option<f64> {
        let aps: Vec<f64> = self.finished().iter().map(|r| r.stats.ap).collect();
        (aps.len() >= 2).then(|| {
            aps.iter().cloned().fold(f64::MIN, f64::max)
                - aps.iter().cloned().fold(f64::MAX, f64::min)
        })
    }
}

/// The index of the best row among `rows` (highest mean AP, then highest mean AP50, then
/// the first), or `None` when no row has a finished run.
fn best_of(rows: &[Option<&Runs>]) -> Option<usize> {
    let mut best: Option<(usize, f64, f64)> = None;
    for (i, r) in rows.iter().enumerate() {
        let Some(r) = r else { continue };
        let (Some(ap), Some(ap50)) = (r.mean(|r| r.stats.ap), r.mean(|r| r.stats.ap50)) else {
            continue;
        };
        let better = match best {
            None => true,
            Some((_, bap, bap50)) => ap > bap || (ap == bap && ap50 > bap50),
        };
        if better {
            best = Some((i, ap, ap50));
        }
    }
    best.map(|b| b.0)
}

/// `v` × 100 with one decimal; COCOeval's −1 (no ground truth in that range) as "n/a".
fn pct(v: f64) -> String {
    if v < 0.0 {
        "n/a".into()
    } else {
        format!("{:.1}", 100.0 * v)
    }
}

fn bold(text: String, on: bool) -> String {
    if on {
        format!("**{text}**")
    } else {
        text
    }
}

/// One table row: the leading cells, then AP, AP50, AP75 (means over the seeds; dashes
/// when nothing finished) — with seeds, also the spread and each seed's AP after AP —
/// then the paper's AP. `bold_alpha` bolds the α column (the last leading cell),
/// `bold_row` every cell.
fn row(
    lead: &[String],
    runs: &Runs,
    seeded: bool,
    paper: Option<f64>,
    bold_alpha: bool,
    bold_row: bool,
) -> String {
    let mut cells: Vec<String> = Vec::new();
    for (i, c) in lead.iter().enumerate() {
        let is_alpha = i + 1 == lead.len();
        cells.push(bold(c.clone(), bold_row || (is_alpha && bold_alpha)));
    }
    let dash = || "–".to_string();
    let ap = runs.mean(|r| r.stats.ap);
    cells.push(bold(ap.map_or_else(dash, pct), bold_row && ap.is_some()));
    if seeded {
        cells.push(runs.ap_spread().map_or_else(dash, pct));
        let each: Vec<String> = runs
            .by_seed
            .iter()
            .map(|r| r.map_or_else(dash, |r| pct(r.stats.ap)))
            .collect();
        cells.push(each.join(", "));
    }
    for f in [|r: &CellRecord| r.stats.ap50, |r: &CellRecord| r.stats.ap75] {
        let v = runs.mean(f);
        cells.push(bold(v.map_or_else(dash, pct), bold_row && v.is_some()));
    }
    cells.push(paper.map_or(String::new(), |p| format!("{p:.1}")));
    format!("| {} |\n", cells.join(" | "))
}

/// The Markdown file: a title, the caller's `caption` (what was trained, how long), and
/// Tables 1a and 1b. Cells of the grid without a record in `records` show "–" (not run
/// yet). Records of settings outside the grid are not shown. With seeds, each row is the
/// mean over the seeds' runs, with their spread and each seed's AP.
pub fn markdown(grid: &Grid, records: &[CellRecord], caption: &str) -> String {
    let seeded = !grid.seeds.is_empty();
    let mut md = String::new();
    md.push_str("# Focal loss against α-balanced cross-entropy (focal ablate)\n\n");
    if !caption.is_empty() {
        md.push_str(caption.trim_end());
        md.push_str("\n\n");
    }
    let settings = grid.settings();
    let done = settings
        .iter()
        .filter(|s| records.iter().any(|r| r.setting() == **s))
        .count();
    let what = if seeded {
        let seeds: Vec<String> = grid.seeds.iter().map(u64::to_string).collect();
        format!(
            "runs finished ({} losses × seeds {}). AP, AP50, AP75: COCO AP × 100 on the \
             validation split, the mean over the seeds' finished runs; spread: the largest \
             minus the smallest AP of the seeds; per seed: each seed's AP (– not finished)",
            grid.losses().len(),
            seeds.join(", ")
        )
    } else {
        "cells finished. AP, AP50, AP75: COCO AP × 100 on the validation split".to_string()
    };
    let _ = writeln!(
        md,
        "{done} of {} {what}; \"paper AP\": the paper's Table 1 (ResNet-50-FPN, COCO, \
         600 px) for the same setting. Bold α: the best α of its γ; bold row: the best row \
         of the table.\n",
        settings.len()
    );
    let (head, rule) = if seeded {
        (
            "AP | spread | per seed | AP50 | AP75 | paper AP |",
            "---:|---:|---:|---:|---:|---:|",
        )
    } else {
        ("AP | AP50 | AP75 | paper AP |", "---:|---:|---:|---:|")
    };

    // Table 1a.
    let ce: Vec<Setting> = grid
        .ce_alphas
        .iter()
        .map(|&alpha| Setting::new(0.0, alpha))
        .collect();
    let ce_runs: Vec<Runs> = ce.iter().map(|s| Runs::of(grid, records, s)).collect();
    let best_ce = best_of(&ce_runs.iter().map(Some).collect::<Vec<_>>());
    if !ce.is_empty() {
        md.push_str("## Table 1a: α-balanced cross-entropy (γ = 0)\n\n");
        let _ = writeln!(md, "| α | {head}\n|---:|{rule}");
        for (i, s) in ce.iter().enumerate() {
            let best = best_ce == Some(i);
            md.push_str(&row(
                &[s.alpha.to_string()],
                &ce_runs[i],
                seeded,
                paper_ap(s),
                best,
                best,
            ));
        }
        md.push('\n');
    }

    // Table 1b: the best CE row, then every focal cell.
    md.push_str("## Table 1b: focal loss (γ > 0), every α\n\n");
    let _ = writeln!(md, "| γ | α | {head}\n|---:|---:|{rule}");
    let mut rows: Vec<(Setting, Runs)> = Vec::new();
    if let Some(b) = best_ce {
        rows.push((ce[b], ce_runs[b].clone()));
    }
    for &gamma in &grid.gammas {
        for &alpha in grid.alphas_of(gamma) {
            let s = Setting::new(gamma, alpha);
            rows.push((s, Runs::of(grid, records, &s)));
        }
    }
    let best_row = best_of(&rows.iter().map(|r| Some(&r.1)).collect::<Vec<_>>());
    for (i, (s, r)) in rows.iter().enumerate() {
        // Best α of this γ: the best among the rows of the same γ.
        let same_gamma: Vec<Option<&Runs>> = rows
            .iter()
            .map(|(t, r)| (t.gamma == s.gamma).then_some(r))
            .collect();
        let best_alpha = best_of(&same_gamma) == Some(i);
        md.push_str(&row(
            &[s.gamma.to_string(), s.alpha.to_string()],
            r,
            seeded,
            paper_ap(s),
            best_alpha,
            best_row == Some(i),
        ));
    }
    if best_ce.is_some() {
        md.push_str("\nThe γ = 0 row is the best α-balanced CE row of Table 1a.\n");
    }
    md
}

/// The CSV file: a header, then one row per finished run of the grid, in grid order
/// (with seeds, a `seed` column), with every number at full precision (fractions, not
/// × 100).
pub fn csv(grid: &Grid, records: &[CellRecord]) -> String {
    let seeded = !grid.seeds.is_empty();
    let mut out = String::from(if seeded {
        "gamma,alpha,seed,loss"
    } else {
        "gamma,alpha,loss"
    });
    for name in STAT_NAMES {
        out.push(',');
        out.push_str(name);
    }
    out.push_str(",seconds,config_hash\n");
    for s in grid.settings() {
        let Some(r) = records.iter().find(|r| r.setting() == s) else {
            continue;
        };
        let loss = if s.is_cross_entropy() { "ce" } else { "focal" };
        match s.seed {
            Some(seed) if seeded => {
                let _ = write!(out, "{},{},{seed},{loss}", s.gamma, s.alpha);
            }
            _ => {
                let _ = write!(out, "{},{},{loss}", s.gamma, s.alpha);
            }
        }
        for v in r.stats.to_array() {
            let _ = write!(out, ",{v}");
        }
        let _ = writeln!(out, ",{},{}", r.seconds, r.config_hash);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use focal_data::CocoStats;

    /// A record whose AP, AP50, AP75 are `ap`, `ap50`, `ap75` and whose other nine numbers
    /// are index/100.
    fn rec(gamma: f32, alpha: f32, ap: f64, ap50: f64, ap75: f64) -> CellRecord {
        let mut s = [0.0; 12];
        for (i, v) in s.iter_mut().enumerate() {
            *v = i as f64 / 100.0;
        }
        s[0] = ap;
        s[1] = ap50;
        s[2] = ap75;
        CellRecord {
            gamma,
            alpha,
            seed: None,
            config_hash: "fnv1a64:00000000000000ff".into(),
            seconds: 1.5,
            stats: CocoStats::from_array(s),
        }
    }

    fn small_grid() -> Grid {
        Grid {
            gammas: vec![1.0, 2.0],
            alphas: vec![0.25, 0.5],
            ce_alphas: vec![0.25, 0.75],
            ..Grid::default()
        }
    }

    #[test]
    fn markdown_lays_out_tables_1a_and_1b_with_the_best_marked() {
        let records = vec![
            rec(0.0, 0.25, 0.108, 0.160, 0.117),
            rec(0.0, 0.75, 0.311, 0.494, 0.330),
            rec(1.0, 0.25, 0.337, 0.520, 0.362),
            rec(1.0, 0.5, 0.300, 0.500, 0.300),
            // γ = 2, α = 0.25 and 0.5 tie on AP; the higher AP50 (α = 0.5) wins.
            rec(2.0, 0.25, 0.340, 0.520, 0.365),
            rec(2.0, 0.5, 0.340, 0.525, 0.360),
            // A record outside the grid is not shown.
            rec(5.0, 0.25, 0.9, 0.9, 0.9),
        ];
        let md = markdown(&small_grid(), &records, "Caption line.");
        // Expected rows, by hand: values × 100 to one decimal (0.108 → 10.8); the paper's
        // AP where Table 1a/1b has the setting (α-CE 0.25: 10.8, 0.75: 31.1; FL γ = 1,
        // α = 0.25: 33.7; γ = 2, α = 0.25: 34.0; γ = 1 or 2 with α = 0.5: not reported).
        // Table 1a: the best of 31.1 and 10.8 is α = 0.75, bold α and bold row.
        // Table 1b: γ = 0 row (best CE, 31.1), γ = 1: 33.7 beats 30.0 → bold α 0.25;
        // γ = 2: tie at 34.0, AP50 52.5 > 52.0 → α = 0.5 is best of γ = 2 and of the table.
        let expected = "\
# Focal loss against α-balanced cross-entropy (focal ablate)

Caption line.

6 of 6 cells finished. AP, AP50, AP75: COCO AP × 100 on the validation split; \"paper AP\": the paper's Table 1 (ResNet-50-FPN, COCO, 600 px) for the same setting. Bold α: the best α of its γ; bold row: the best row of the table.

## Table 1a: α-balanced cross-entropy (γ = 0)

| α | AP | AP50 | AP75 | paper AP |
|---:|---:|---:|---:|---:|
| 0.25 | 10.8 | 16.0 | 11.7 | 10.8 |
| **0.75** | **31.1** | **49.4** | **33.0** | 31.1 |

## Table 1b: focal loss (γ > 0), every α

| γ | α | AP | AP50 | AP75 | paper AP |
|---:|---:|---:|---:|---:|---:|
| 0 | **0.75** | 31.1 | 49.4 | 33.0 | 31.1 |
| 1 | **0.25** | 33.7 | 52.0 | 36.2 | 33.7 |
| 1 | 0.5 | 30.0 | 50.0 | 30.0 |  |
| 2 | 0.25 | 34.0 | 52.0 | 36.5 | 34.0 |
| **2** | **0.5** | **34.0** | **52.5** | **36.0** |  |

The γ = 0 row is the best α-balanced CE row of Table 1a.
";
        assert_eq!(md, expected, "got:\n{md}");
    }

    #[test]
    fn unfinished_cells_show_dashes_and_are_never_best() {
        let records = vec![rec(1.0, 0.5, 0.2, 0.3, 0.1)];
        let md = markdown(&small_grid(), &records, "");
        assert!(md.contains("1 of 6 cells finished"), "{md}");
        assert!(md.contains("| 0.25 | – | – | – | 10.8 |"), "{md}");
        assert!(md.contains("| 2 | 0.5 | – | – | – |  |"), "{md}");
        // The only finished cell is the best of its γ and of Table 1b; no γ = 0 row since
        // no CE cell finished.
        assert!(
            md.contains("| **1** | **0.5** | **20.0** | **30.0** | **10.0** |  |"),
            "{md}"
        );
        assert!(!md.contains("| 0 |"), "{md}");
    }

    /// A record of `seed`.
    fn seeded(gamma: f32, alpha: f32, seed: u64, ap: f64, ap50: f64, ap75: f64) -> CellRecord {
        CellRecord {
            seed: Some(seed),
            ..rec(gamma, alpha, ap, ap50, ap75)
        }
    }

    #[test]
    fn seeded_rows_give_the_mean_the_spread_and_each_seed() {
        let grid = Grid {
            gammas: vec![2.0],
            alphas: vec![0.25],
            ce_alphas: vec![0.75],
            gamma_alphas: vec![vec![0.25, 0.5]],
            seeds: vec![0, 1],
        };
        let records = vec![
            seeded(0.0, 0.75, 0, 0.300, 0.500, 0.310),
            seeded(0.0, 0.75, 1, 0.320, 0.520, 0.330),
            seeded(2.0, 0.25, 0, 0.350, 0.540, 0.360),
            seeded(2.0, 0.25, 1, 0.330, 0.500, 0.340),
            // Only seed 1 of γ = 2, α = 0.5 finished.
            seeded(2.0, 0.5, 1, 0.100, 0.200, 0.050),
        ];
        let md = markdown(&grid, &records, "");
        // By hand: CE α = 0.75: AP mean (30.0 + 32.0)/2 = 31.0, spread 2.0, AP50 51.0,
        // AP75 32.0. FL γ = 2, α = 0.25: AP 34.0, spread 2.0, AP50 52.0, AP75 35.0 — the
        // best row. α = 0.5: one seed, 10.0, no spread.
        assert!(
            md.contains("5 of 6 runs finished (3 losses × seeds 0, 1)"),
            "{md}"
        );
        assert!(
            md.contains("| α | AP | spread | per seed | AP50 | AP75 | paper AP |"),
            "{md}"
        );
        assert!(
            md.contains("| **0.75** | **31.0** | 2.0 | 30.0, 32.0 | **51.0** | **32.0** | 31.1 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| **2** | **0.25** | **34.0** | 2.0 | 35.0, 33.0 | **52.0** | **35.0** | 34.0 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 2 | 0.5 | 10.0 | – | –, 10.0 | 20.0 | 5.0 |  |"),
            "{md}"
        );
        assert!(
            md.contains("| 0 | **0.75** | 31.0 | 2.0 | 30.0, 32.0 |"),
            "{md}"
        );

        let text = csv(&grid, &records);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("gamma,alpha,seed,loss,AP,"),
            "{}",
            lines[0]
        );
        // Grid order: all of seed 0, then seed 1.
        assert!(lines[1].starts_with("0,0.75,0,ce,0.3,"), "{}", lines[1]);
        assert!(lines[2].starts_with("2,0.25,0,focal,0.35,"), "{}", lines[2]);
        assert!(lines[3].starts_with("0,0.75,1,ce,0.32,"), "{}", lines[3]);
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn csv_has_every_number_of_every_finished_cell_in_grid_order() {
        let records = vec![
            rec(2.0, 0.5, 0.34, 0.525, 0.36),
            rec(0.0, 0.75, 0.311, 0.494, 0.33),
        ];
        let text = csv(&small_grid(), &records);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "gamma,alpha,loss,AP,AP50,AP75,APs,APm,APl,AR1,AR10,AR100,ARs,ARm,ARl,seconds,config_hash"
        );
        // Grid order: the CE cell first. Other stats are index/100: APs = 0.03, ... ARl = 0.11
        // (printed as f64 Display: 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.11).
        assert_eq!(
            lines[1],
            "0,0.75,ce,0.311,0.494,0.33,0.03,0.04,0.05,0.06,0.07,0.08,0.09,0.1,0.11,1.5,fnv1a64:00000000000000ff"
        );
        assert!(
            lines[2].starts_with("2,0.5,focal,0.34,0.525,0.36,"),
            "{}",
            lines[2]
        );
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn the_paper_numbers_are_found_by_setting() {
        assert_eq!(paper_ap(&Setting::new(2.0, 0.25)), Some(34.0));
        assert_eq!(paper_ap(&Setting::new(0.0, 0.75)), Some(31.1));
        assert_eq!(paper_ap(&Setting::new(2.0, 0.75)), None);
    }
}
