//! Script API for core::data: the `Dataset`, `Batches` and `Batch` types and the loaders
//! (`adience`, `utkface`, `image_folder`, `csv_manifest`, `synthetic`).
use crate::core::data::{self, BatchOpts, Dataset, DecodeOpts};
use crate::script::convert::{Opts, RResult, friendly_type, guard, i64_array, script_err, str_array};
use crate::script::docs::doc;
use crate::script::types::TensorV;
use crate::script::{data_root, state};
use rhai::{Array, Dynamic, Engine, Map};
use std::path::PathBuf;
use std::rc::Rc;

/// A dataset as scripts see it (shared, immutable).
#[derive(Clone)]
pub struct DatasetV(pub Rc<Dataset>);

/// One epoch of batches; iterating it (`for b in ds.batches(64, #{})`) builds the batches lazily. Iterating the
/// same value twice gives the same epoch (same shuffle and augmentation).
#[derive(Clone)]
pub struct BatchesV {
    pub ds: Rc<Dataset>,
    pub opts: BatchOpts,
}

/// One mini-batch: `x` f32 [B, 3, H, W] in [0, 1], `y` i64 [B], `idx` the dataset indices.
#[derive(Clone)]
pub struct BatchV {
    pub x: TensorV,
    pub y: TensorV,
    pub idx: Vec<i64>,
}

impl IntoIterator for BatchesV {
    type Item = RResult<BatchV>;
    type IntoIter = Box<dyn Iterator<Item = RResult<BatchV>>>;
    fn into_iter(self) -> Self::IntoIter {
        match self.ds.batches(&self.opts) {
            Ok(b) => Box::new(b.map(|r| {
                r.map(|b| BatchV { x: TensorV(b.x), y: TensorV(b.y), idx: b.idx }).map_err(|e| {
                    if crate::core::cancel::is_cancel_error(&e) {
                        script_err("cancelled by Ctrl-C")
                    } else {
                        script_err(format!("batches: {e:#}"))
                    }
                })
            })),
            Err(e) => Box::new(std::iter::once(Err(script_err(format!("batches: {e:#}"))))),
        }
    }
}

/// Decode options shared by the file loaders: size, resize, cache, cache_dir.
fn decode_opts(o: &Opts, default_size: i64) -> RResult<DecodeOpts> {
    let size = o.i64_or("size", default_size)?;
    let resize = o.choice_or("resize", "crop", &["crop", "stretch"])?;
    Ok(DecodeOpts {
        size,
        resize: data::Resize::parse(&resize).map_err(|e| script_err(format!("{}: {e}", o.func())))?,
        cache: o.bool_or("cache", true)?,
        cache_dir: o.opt_str("cache_dir")?.map(PathBuf::from),
        threads: 0,
    })
}

fn seed_opt(o: &Opts) -> RResult<u64> {
    let s = o.i64_or("seed", state::with(|s| s.seed) as i64)?;
    if s < 0 {
        return Err(script_err(format!("{}: seed must be >= 0, got {s}", o.func())));
    }
    Ok(s as u64)
}

/// Prints what a loader left out (unless quiet), then returns the dataset, or `#{train, test}` when `fold` is given.
fn finish(func: &str, ds: Dataset, fold: Option<i64>) -> anyhow::Result<Dynamic> {
    if !state::quiet() && (!ds.report.dropped.is_empty() || !ds.report.info.is_empty()) {
        eprintln!("{}", ds.report.summary(func));
    }
    match fold {
        None => Ok(Dynamic::from(DatasetV(Rc::new(ds)))),
        Some(f) => fold_map(&ds, f),
    }
}

fn fold_map(ds: &Dataset, f: i64) -> anyhow::Result<Dynamic> {
    let (train, test) = ds.fold_split(f)?;
    let mut m = Map::new();
    m.insert("train".into(), Dynamic::from(DatasetV(Rc::new(train))));
    m.insert("test".into(), Dynamic::from(DatasetV(Rc::new(test))));
    Ok(Dynamic::from_map(m))
}

fn report_map(r: &data::LoadReport) -> Map {
    r.dropped.iter().map(|(k, v)| (k.as_str().into(), Dynamic::from_int(*v as i64))).collect()
}

const ADIENCE_KEYS: &[&str] = &[
    "root",
    "fold",
    "size",
    "resize",
    "age_mapping",
    "drop_duplicates",
    "skip_missing",
    "skip_bad",
    "task",
    "faces",
    "cache",
    "cache_dir",
];
const UTK_KEYS: &[&str] = &[
    "root",
    "size",
    "resize",
    "mapping",
    "task",
    "folds",
    "fold",
    "seed",
    "limit",
    "skip_missing",
    "skip_bad",
    "cache",
    "cache_dir",
];
const FOLDER_KEYS: &[&str] =
    &["root", "size", "resize", "classes", "folds", "fold", "seed", "skip_missing", "skip_bad", "cache", "cache_dir"];
const MANIFEST_KEYS: &[&str] =
    &["path", "size", "resize", "classes", "folds", "fold", "seed", "skip_missing", "skip_bad", "cache", "cache_dir"];
const SYNTH_KEYS: &[&str] = &["n", "classes", "size", "seed", "noise", "folds", "groups", "fold"];

/// `root` if given, else `data_root()/<sub>`, which must then exist: a fresh clone away from ../shared/data gets told
/// how to point satm at the data instead of a bare "not a directory".
fn root_or_default(o: &Opts, sub: &str) -> RResult<PathBuf> {
    if let Some(r) = o.opt_str("root")? {
        return Ok(PathBuf::from(r));
    }
    let root = data_root().join(sub);
    if !root.is_dir() {
        return Err(script_err(format!(
            "{sub}: no data at {} (the default: $SATM_DATA, else ../shared/data beside the checkout, else what \
             `satm data import` put in ~/.local/share/satm/data, else the bundled sample, which holds utkface/ only); \
             import it with `satm data import {sub} ...`, set SATM_DATA to the folder that holds {sub}/, or pass root: \"DIR\"",
            root.display()
        )));
    }
    Ok(root)
}

fn load_adience(m: Map) -> RResult<Dynamic> {
    let o = Opts::new("adience", m, ADIENCE_KEYS)?;
    let root = root_or_default(&o, "adience")?;
    let task = o.choice_or("task", "age", &["age", "gender"])?;
    let mapping = o.choice_or("age_mapping", "standard", &["standard", "nearest"])?;
    let faces = o.choice_or("faces", "faces", &["faces", "aligned"])?;
    let opts = data::AdienceOpts {
        decode: decode_opts(&o, 64)?,
        task: if task == "age" { data::Task::Age } else { data::Task::Gender },
        age_mapping: if mapping == "nearest" { data::AgeMapping::Nearest } else { data::AgeMapping::Standard },
        drop_duplicates: o.bool_or("drop_duplicates", false)?,
        skip_missing: o.bool_or("skip_missing", false)?,
        skip_bad: o.bool_or("skip_bad", false)?,
        faces: if faces == "aligned" { data::FaceSet::Aligned } else { data::FaceSet::Faces },
    };
    let fold = o.opt_i64("fold")?;
    guard("adience", || finish("adience", data::adience(&root, &opts)?, fold))
}

fn load_utkface(m: Map) -> RResult<Dynamic> {
    let o = Opts::new("utkface", m, UTK_KEYS)?;
    let root = root_or_default(&o, "utkface")?;
    let mapping = o.choice_or("mapping", "drop", &["drop", "nearest"])?;
    let task = o.choice_or("task", "age", &["age", "gender"])?;
    let limit = o.opt_i64("limit")?;
    if let Some(l) = limit
        && l < 1
    {
        return Err(script_err(format!("utkface: limit must be at least 1, got {l}")));
    }
    let opts = data::UtkOpts {
        decode: decode_opts(&o, 64)?,
        mapping: if mapping == "nearest" { data::UtkMapping::Nearest } else { data::UtkMapping::Drop },
        task: if task == "age" { data::UtkTask::Age } else { data::UtkTask::Gender },
        folds: o.usize_or("folds", 5)?,
        seed: seed_opt(&o)?,
        limit: limit.map(|l| l as usize),
        skip_missing: o.bool_or("skip_missing", false)?,
        skip_bad: o.bool_or("skip_bad", false)?,
    };
    let fold = o.opt_i64("fold")?;
    guard("utkface", || finish("utkface", data::utkface(&root, &opts)?, fold))
}

fn manifest_opts(o: &Opts) -> RResult<data::ManifestOpts> {
    let classes = match o.raw("classes") {
        None => None,
        Some(_) => Some(
            o.array_or_empty("classes")?
                .into_iter()
                .map(|v| {
                    v.clone()
                        .into_immutable_string()
                        .map(|s| s.to_string())
                        .map_err(|_| script_err(format!("{}: classes must be an array of strings", o.func())))
                })
                .collect::<RResult<Vec<String>>>()?,
        ),
    };
    Ok(data::ManifestOpts {
        decode: decode_opts(o, 64)?,
        classes,
        folds: o.usize_or("folds", 0)?,
        seed: seed_opt(o)?,
        skip_missing: o.bool_or("skip_missing", false)?,
        skip_bad: o.bool_or("skip_bad", false)?,
    })
}

fn load_folder(m: Map) -> RResult<Dynamic> {
    let o = Opts::new("image_folder", m, FOLDER_KEYS)?;
    let root = o.opt_str("root")?.ok_or_else(|| script_err("image_folder: option 'root' is required"))?;
    let opts = manifest_opts(&o)?;
    let fold = o.opt_i64("fold")?;
    guard("image_folder", || finish("image_folder", data::image_folder(&PathBuf::from(&root), &opts)?, fold))
}

fn load_manifest(m: Map) -> RResult<Dynamic> {
    let o = Opts::new("csv_manifest", m, MANIFEST_KEYS)?;
    let path = o.opt_str("path")?.ok_or_else(|| script_err("csv_manifest: option 'path' is required"))?;
    let opts = manifest_opts(&o)?;
    let fold = o.opt_i64("fold")?;
    guard("csv_manifest", || finish("csv_manifest", data::csv_manifest(&PathBuf::from(&path), &opts)?, fold))
}

fn load_synthetic(m: Map) -> RResult<Dynamic> {
    let o = Opts::new("synthetic", m, SYNTH_KEYS)?;
    let d = data::SyntheticOpts::default();
    let opts = data::SyntheticOpts {
        n: o.usize_or("n", d.n)?,
        classes: o.usize_or("classes", d.classes)?,
        size: o.i64_or("size", d.size)?,
        seed: seed_opt(&o)?,
        noise: o.f64_or("noise", d.noise)?,
        folds: o.usize_or("folds", d.folds)?,
        groups: o.usize_or("groups", d.groups)?,
    };
    let fold = o.opt_i64("fold")?;
    guard("synthetic", || finish("synthetic", data::synthetic(&opts)?, fold))
}

fn batch_opts(size: i64, m: Map) -> RResult<BatchOpts> {
    let o = Opts::new("batches", m, &["shuffle", "seed", "augment", "drop_last", "device"])?;
    if size < 1 {
        return Err(script_err(format!("batches: batch size must be at least 1, got {size}")));
    }
    let device = match o.opt_str("device")? {
        Some(d) => guard("batches", || crate::core::device::parse_device(&d))?,
        None => state::device(),
    };
    Ok(BatchOpts {
        batch_size: size as usize,
        shuffle: o.bool_or("shuffle", true)?,
        seed: seed_opt(&o)?,
        augment: o.bool_or("augment", false)?,
        drop_last: o.bool_or("drop_last", false)?,
        device,
    })
}

fn wrap(ds: Dataset) -> DatasetV {
    DatasetV(Rc::new(ds))
}

fn split_map(a: Dataset, b: Dataset, names: [&str; 2]) -> Map {
    let mut m = Map::new();
    m.insert(names[0].into(), Dynamic::from(wrap(a)));
    m.insert(names[1].into(), Dynamic::from(wrap(b)));
    m
}

pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<DatasetV>("Dataset");
    engine.register_type_with_name::<BatchesV>("Batches");
    engine.register_type_with_name::<BatchV>("Batch");
    engine.register_iterator_result::<BatchesV, BatchV>();
    engine.register_fn("to_string", |d: &mut DatasetV| d.0.to_string());
    engine.register_fn("to_debug", |d: &mut DatasetV| d.0.to_string());
    engine.register_fn("to_string", |b: &mut BatchesV| {
        format!("Batches[{}; {} batches of {}]", b.ds.name, b.ds.len().div_ceil(b.opts.batch_size), b.opts.batch_size)
    });
    engine.register_fn("to_string", |b: &mut BatchV| format!("Batch[{} items; x {}; y {}]", b.idx.len(), b.x, b.y));

    doc(
        "adience",
        &["opts: Map"],
        "Dataset",
        "The Adience benchmark from its official fold files (root: the folder with fold_0_data.txt .. fold_4_data.txt \
         and faces/; default data_root()/adience). Options: size (64), resize (\"crop\"|\"stretch\"), task \
         (\"age\"|\"gender\"), age_mapping (\"standard\": only the 8 standard age strings, others dropped and counted | \
         \"nearest\"), drop_duplicates (false), skip_missing (false: error), skip_bad (false), faces (\"faces\"|\"aligned\"), \
         cache (true), cache_dir. With fold: i returns #{train, test} for that test fold.",
    )
    .register_into_engine(engine, load_adience);
    doc(
        "utkface",
        &["opts: Map"],
        "Dataset",
        "UTKFace (root default data_root()/utkface; labels.csv or file names age_gender_race_datetime.jpg). Ages go to \
         the 8 Adience groups with mapping \"drop\" (gap ages left out) or \"nearest\". Options: size (64), resize, task \
         (\"age\"|\"gender\"), folds (5, seeded and stratified), seed (session seed), limit (seeded stratified subset), \
         skip_missing, skip_bad, cache, cache_dir; fold: i returns #{train, test}.",
    )
    .register_into_engine(engine, load_utkface);
    doc("utkface", &[], "Dataset", "UTKFace with the default options.")
        .register_into_engine(engine, || load_utkface(Map::new()));
    doc(
        "image_folder",
        &["opts: Map"],
        "Dataset",
        "Images in one subfolder per class under root (.jpg/.jpeg/.png). Options: root (required), size (64), resize, \
         classes (class order; default sorted names), folds (0), seed, fold, skip_missing, skip_bad, cache, cache_dir.",
    )
    .register_into_engine(engine, load_folder);
    doc(
        "csv_manifest",
        &["opts: Map"],
        "Dataset",
        "Images listed in a CSV file: path,label[,group[,fold]] (header optional; paths relative to the file). \
         Options: path (required), size (64), resize, classes, folds (0: none unless the file has them), seed, fold, \
         skip_missing, skip_bad, cache, cache_dir.",
    )
    .register_into_engine(engine, load_manifest);
    doc(
        "synthetic",
        &["opts: Map"],
        "Dataset",
        "A synthetic ordinal dataset: class k = stripes whose brightness and frequency grow with k, plus noise; \
         learnable by a small CNN in seconds. Options: n (512), classes (8), size (32), seed (session seed), noise (0.1), \
         folds (0), groups (0: no subjects), fold.",
    )
    .register_into_engine(engine, load_synthetic);
    doc("synthetic", &[], "Dataset", "The synthetic dataset with default options.")
        .register_into_engine(engine, || load_synthetic(Map::new()));

    doc("len", &["ds: Dataset"], "int", "Number of items.")
        .register_into_engine(engine, |d: &mut DatasetV| d.0.len() as i64);
    engine.register_get("name", |d: &mut DatasetV| d.0.name.clone());
    engine.register_get("classes", |d: &mut DatasetV| str_array(&d.0.classes));
    engine.register_get("num_classes", |d: &mut DatasetV| d.0.num_classes());
    engine.register_get("size", |d: &mut DatasetV| d.0.size().0);
    engine.register_get("labels", |d: &mut DatasetV| i64_array(&d.0.labels));
    engine.register_get("folds", |d: &mut DatasetV| i64_array(&d.0.folds));
    engine.register_get("groups", |d: &mut DatasetV| str_array(&d.0.groups));
    engine.register_get("paths", |d: &mut DatasetV| str_array(&d.0.paths));
    engine.register_get("images", |d: &mut DatasetV| TensorV(d.0.images.shallow_clone()));
    engine.register_get("report", |d: &mut DatasetV| report_map(&d.0.report));
    doc("load_summary", &["ds: Dataset"], "String", "What the loader kept and left out, by reason.")
        .register_into_engine(engine, |d: &mut DatasetV| d.0.report.summary(&d.0.name));

    doc("fold", &["ds: Dataset", "i: int"], "Map", "Cross-validation split #{train: other folds, test: fold i}.")
        .register_into_engine(engine, |d: &mut DatasetV, i: i64| -> RResult<Map> {
            guard("fold", || Ok(fold_map(&d.0, i)?.cast::<Map>()))
        });
    doc(
        "split",
        &["ds: Dataset", "frac: float", "seed: int"],
        "Map",
        "A validation split #{train, val} of about frac of the items: whole subjects when the dataset has groups \
         (Adience users), else stratified by class.",
    )
    .register_into_engine(engine, |d: &mut DatasetV, frac: f64, seed: i64| -> RResult<Map> {
        guard("split", || {
            anyhow::ensure!(seed >= 0, "seed must be >= 0, got {seed}");
            let (a, b) = d.0.split_val(frac, seed as u64)?;
            Ok(split_map(a, b, ["train", "val"]))
        })
    });
    doc("split", &["ds: Dataset", "frac: float"], "Map", "split(frac, seed) with the session seed.")
        .register_into_engine(engine, |d: &mut DatasetV, frac: f64| -> RResult<Map> {
            guard("split", || {
                let (a, b) = d.0.split_val(frac, state::with(|s| s.seed))?;
                Ok(split_map(a, b, ["train", "val"]))
            })
        });
    doc("take", &["ds: Dataset", "n: int"], "Dataset", "The first n items (all when n >= len).").register_into_engine(
        engine,
        |d: &mut DatasetV, n: i64| -> RResult<DatasetV> {
            guard("take", || {
                anyhow::ensure!(n >= 0, "n must be >= 0, got {n}");
                let idx: Vec<i64> = (0..(n as usize).min(d.0.len()) as i64).collect();
                Ok(wrap(d.0.subset(&idx)?))
            })
        },
    );
    doc(
        "subset",
        &["ds: Dataset", "n: int"],
        "Dataset",
        "A seeded (session seed) stratified random subset of n items, in dataset order.",
    )
    .register_into_engine(engine, |d: &mut DatasetV, n: i64| -> RResult<DatasetV> {
        guard("subset", || {
            anyhow::ensure!(n >= 1, "n must be >= 1, got {n}");
            let take = data::stratified_take(&d.0.labels, d.0.classes.len(), n as usize, state::with(|s| s.seed));
            let idx: Vec<i64> = take.into_iter().map(|i| i as i64).collect();
            Ok(wrap(d.0.subset(&idx)?))
        })
    });
    doc("subset", &["ds: Dataset", "indices: Array"], "Dataset", "The items at the given indices, in that order.")
        .register_into_engine(engine, |d: &mut DatasetV, idx: Array| -> RResult<DatasetV> {
            guard("subset", || {
                let idx: Vec<i64> = idx
                    .iter()
                    .map(|v| {
                        v.as_int().map_err(|_| {
                            anyhow::anyhow!("indices must be integers, got {}", friendly_type(v.type_name()))
                        })
                    })
                    .collect::<anyhow::Result<_>>()?;
                Ok(wrap(d.0.subset(&idx)?))
            })
        });
    doc("class_counts", &["ds: Dataset"], "Table", "Items per class (per fold when the dataset has folds).")
        .register_into_engine(engine, |d: &mut DatasetV| d.0.counts_table());

    doc(
        "batches",
        &["ds: Dataset", "size: int", "opts: Map"],
        "Batches",
        "One epoch of mini-batches for `for b in ...`: b.x f32 [B,3,H,W] in [0,1], b.y i64 [B], b.idx. Options: \
         shuffle (true), seed (session seed; use seed + epoch per epoch), augment (false: random flip + 4-px padded \
         crop), drop_last (false), device (session device).",
    )
    .register_into_engine(engine, |d: &mut DatasetV, size: i64, m: Map| -> RResult<BatchesV> {
        Ok(BatchesV { ds: d.0.clone(), opts: batch_opts(size, m)? })
    });
    doc("batches", &["ds: Dataset", "size: int"], "Batches", "batches(size, #{}) with the defaults.")
        .register_into_engine(engine, |d: &mut DatasetV, size: i64| -> RResult<BatchesV> {
            Ok(BatchesV { ds: d.0.clone(), opts: batch_opts(size, Map::new())? })
        });
    doc("len", &["b: Batches"], "int", "Number of batches in the epoch.").register_into_engine(
        engine,
        |b: &mut BatchesV| {
            let n = b.ds.len();
            let bs = b.opts.batch_size;
            (if b.opts.drop_last { n / bs } else { n.div_ceil(bs) }) as i64
        },
    );
    doc("epoch", &["b: Batches", "e: int"], "Batches", "The same batches for epoch e (seed + e).")
        .register_into_engine(engine, |b: &mut BatchesV, e: i64| -> RResult<BatchesV> {
            if e < 0 {
                return Err(script_err(format!("epoch: must be >= 0, got {e}")));
            }
            Ok(BatchesV { ds: b.ds.clone(), opts: b.opts.epoch(e as u64) })
        });
    engine.register_get("x", |b: &mut BatchV| b.x.clone());
    engine.register_get("y", |b: &mut BatchV| b.y.clone());
    engine.register_get("idx", |b: &mut BatchV| i64_array(&b.idx));
    doc("len", &["b: Batch"], "int", "Items in the batch.")
        .register_into_engine(engine, |b: &mut BatchV| b.idx.len() as i64);
}
