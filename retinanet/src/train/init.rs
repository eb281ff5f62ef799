//! Starting a run from pretrained weights (`focal train --init FILE.safetensors`).
//!
//! The kinds of file of [`crate::pretrained`] are understood:
//!
//! - a RetinaNet state dict under torchvision's names, or a focal export: every tensor
//!   goes to the parameter of the same name. The **class output** is matched to the
//!   dataset's classes ([`ClassHead`]): torchvision's 91 COCO rows give the rows of the
//!   dataset's categories when these are COCO categories (same id and name), a focal
//!   export's named classes give the rows of the dataset's classes found among them; when
//!   the classes differ (other categories, or another number of unnamed ones), the class
//!   output keeps its fresh initialisation, weights N(0, 0.01²) and the prior bias
//!   −ln((1 − π)/π) (the paper's §3.3), and the report says so;
//! - an ImageNet ResNet (names `conv1.weight`, `layer1.0.conv1.weight`, ..., `fc.*`): its
//!   tensors go to `backbone.body.*`, the classifier `fc` is left out, the FPN and the
//!   head start fresh.
//!
//! Whatever fits (same name and shape) is loaded; the rest keeps its fresh initialisation
//! and is listed in the report. A file of which nothing fits is an error.

use std::path::Path;

use focal_engine::Tensor;
use focal_nn::{import_safetensors, ImportOptions, ImportReport};

use super::records::ClassName;
use crate::error::Error;
use crate::import::{COCO_IDS, TORCHVISION_COCO_CLASSES};
use crate::model::RetinaNet;
use crate::pretrained::{
    architecture, are_coco_categories, ArchitectureOptions, Classes, WeightsFile, WeightsKind,
};

/// What happened to the class output of the head.
#[derive(Clone, Debug, PartialEq)]
pub enum ClassHead {
    /// Loaded as it is: the file's classes are the dataset's.
    Loaded,
    /// The rows of the dataset's classes were taken from the file's `file_classes`.
    Selected { file_classes: usize },
    /// The file's classes differ from the dataset's: the class output was re-initialised
    /// with the prior (π of the configuration).
    Reinitialised { reason: String },
    /// The file has no head (an ImageNet backbone): freshly initialised, prior included.
    NotInFile,
}

/// What [`init_from_safetensors`] did.
#[derive(Clone, Debug)]
pub struct InitReport {
    pub kind: WeightsKind,
    pub import: ImportReport,
    pub class_head: ClassHead,
}

impl InitReport {
    /// One line per fact, for the user.
    pub fn lines(&self, prior: f32) -> Vec<String> {
        let mut out = vec![format!(
            "{}: {} of the model's tensors loaded",
            self.kind.describe(),
            self.import.loaded.len()
        )];
        out.push(match &self.class_head {
            ClassHead::Loaded => "class head loaded (the file's classes are the dataset's)".into(),
            ClassHead::Selected { file_classes } => format!(
                "class head: the rows of the dataset's classes taken from the file's \
                 {file_classes} classes"
            ),
            ClassHead::Reinitialised { reason } => {
                format!("class head re-initialised with the prior π = {prior} ({reason})")
            }
            ClassHead::NotInFile => format!(
                "FPN and head freshly initialised (the file is a backbone; class bias from \
                 the prior π = {prior})"
            ),
        });
        for p in self.import.problems() {
            out.push(format!("kept fresh ({p})"));
        }
        out
    }
}

const CLS_WEIGHT: &str = "head.classification_head.cls_logits.weight";
const CLS_BIAS: &str = "head.classification_head.cls_logits.bias";

/// How the file's class rows map to the dataset's: `Some(indices)` (the file's class
/// index of each dataset class), `None` with the reason when they do not.
fn class_rows(
    file_classes: &Classes,
    file_rows_per_anchor: usize,
    dataset: &[ClassName],
) -> Result<Vec<usize>, String> {
    let file_names = file_classes.names();
    let coco_rows = file_rows_per_anchor == TORCHVISION_COCO_CLASSES
        && file_names.len() == COCO_IDS.len()
        && file_names
            .iter()
            .zip(COCO_IDS)
            .all(|(c, id)| c.id == id as i64);
    if coco_rows {
        // torchvision's layout: row = COCO id.
        if are_coco_categories(dataset) {
            return Ok(dataset.iter().map(|c| c.id as usize).collect());
        }
        let other: Vec<String> = dataset
            .iter()
            .filter(|c| !are_coco_categories(std::slice::from_ref(c)))
            .take(3)
            .map(|c| format!("{} {:?}", c.id, c.name))
            .collect();
        return Err(format!(
            "the file's classes are COCO's 80 categories; the dataset's {} classes include \
             others: {}",
            dataset.len(),
            other.join(", ")
        ));
    }
    match file_classes {
        Classes::Unnamed(k) if *k == dataset.len() => Ok((0..*k).collect()),
        Classes::Unnamed(k) => Err(format!(
            "the file has {k} unnamed classes, the dataset {}",
            dataset.len()
        )),
        _ => {
            let found: Option<Vec<usize>> = dataset
                .iter()
                .map(|c| file_names.iter().position(|f| f == c))
                .collect();
            found.ok_or_else(|| {
                format!(
                    "the file's {} classes ({}...) are not the dataset's {} ({}...)",
                    file_names.len(),
                    preview(&file_names),
                    dataset.len(),
                    preview(dataset)
                )
            })
        }
    }
}

fn preview(classes: &[ClassName]) -> String {
    classes
        .iter()
        .take(3)
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Loads what fits of `path` into `model`, whose labels are `categories` (the dataset's
/// classes); see the module documentation.
pub fn init_from_safetensors(
    model: &mut RetinaNet,
    path: &Path,
    categories: &[ClassName],
) -> Result<InitReport, Error> {
    let file = WeightsFile::read(path)?;
    let a = model.config.anchors.anchors_per_cell();
    let (report, class_head) = if file.kind == WeightsKind::Backbone {
        let opts = ImportOptions::new()
            .rename(|n: &str| (!n.starts_with("fc.")).then(|| format!("backbone.body.{n}")));
        (
            import_safetensors(model, path, &opts)?,
            ClassHead::NotInFile,
        )
    } else {
        let file_classes = architecture(&file, &ArchitectureOptions::default())
            .map(|arch| arch.classes)
            .ok();
        let file_rows = file.shape(CLS_WEIGHT).map(|s| s[0] / a.max(1));
        let mapping = match (file_classes, file_rows) {
            (Some(classes), Some(rows)) => class_rows(&classes, rows, categories),
            (None, Some(rows)) => class_rows(&Classes::Unnamed(rows), rows, categories),
            (_, None) => Err("the file has no class output".to_string()),
        };
        let class_head = match (&mapping, file_rows) {
            (Ok(rows), Some(k)) if k == categories.len() && rows.iter().copied().eq(0..k) => {
                ClassHead::Loaded
            }
            (Ok(_), Some(k)) => ClassHead::Selected { file_classes: k },
            (Err(reason), _) => ClassHead::Reinitialised {
                reason: reason.clone(),
            },
            (Ok(_), None) => unreachable!("a mapping needs the file's rows"),
        };
        let rows = mapping.ok();
        let skip_cls = rows.is_none();
        let file_k = file_rows.unwrap_or(0);
        let select = move |name: &str, t: Tensor, _shape: &[usize]| -> focal_nn::Result<Tensor> {
            match &rows {
                Some(r) if (name == CLS_WEIGHT || name == CLS_BIAS) && t.dim(0) == a * file_k => {
                    let all: Vec<usize> = (0..a)
                        .flat_map(|anchor| r.iter().map(move |&k| anchor * file_k + k))
                        .collect();
                    Ok(t.detach().index_select(0, &all))
                }
                _ => Ok(t),
            }
        };
        let opts = ImportOptions::new()
            .rename(move |n: &str| {
                (!(skip_cls && (n == CLS_WEIGHT || n == CLS_BIAS))).then(|| n.to_string())
            })
            .transform(select);
        (import_safetensors(model, path, &opts)?, class_head)
    };
    if report.loaded.is_empty() {
        let why = format!(
            "no tensor fits the model ({})",
            report.problems().join("; ")
        );
        return Err(focal_nn::Error::in_weights(path, focal_nn::Error::Invalid(why)).into());
    }
    Ok(InitReport {
        kind: file.kind,
        import: report,
        class_head,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretrained::coco_classes;

    fn class(id: i64, name: &str) -> ClassName {
        ClassName {
            id,
            name: name.into(),
        }
    }

    #[test]
    fn class_rows_follow_ids_names_or_positions() {
        // torchvision's COCO rows: a COCO subset takes the rows of its ids.
        let subset = vec![class(3, "car"), class(18, "dog")];
        assert_eq!(
            class_rows(&Classes::CocoFrom91, 91, &subset),
            Ok(vec![3, 18])
        );
        // A category that is not COCO's (or renamed) cannot.
        let other = vec![class(3, "car"), class(7, "tram")];
        let e = class_rows(&Classes::CocoFrom91, 91, &other).unwrap_err();
        assert!(e.contains("7 \"tram\""), "{e}");
        // A focal export's named classes: found by id and name.
        let named = Classes::Named(vec![class(1, "a"), class(2, "b"), class(5, "c")]);
        assert_eq!(
            class_rows(&named, 3, &[class(5, "c"), class(1, "a")]),
            Ok(vec![2, 0])
        );
        assert!(class_rows(&named, 3, &[class(4, "d")]).is_err());
        // A focal export of COCO's 80 written with 91 rows.
        let coco = Classes::Named(coco_classes());
        assert_eq!(class_rows(&coco, 91, &subset), Ok(vec![3, 18]));
        // Unnamed classes: only the same number, in order.
        assert_eq!(class_rows(&Classes::Unnamed(2), 2, &subset), Ok(vec![0, 1]));
        assert!(class_rows(&Classes::Unnamed(5), 5, &subset).is_err());
    }
}
