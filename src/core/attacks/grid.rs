//! The paper's Figure 1: adversarial / clean pairs (adversarial left, clean right) with the true label and the
//! prediction on the adversarial image written under each pair. Text uses DejaVu Sans, embedded in the binary so the
//! figure looks the same on every machine (assets/fonts, Bitstream Vera license).
use crate::core::fsutil;
use anyhow::{Context, Result, anyhow, ensure};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

const FONT_NAME: &str = "satm-dejavu-sans";
static FONT_BYTES: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
static FONT: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Registers the embedded font with plotters once per process.
fn ensure_font() -> Result<()> {
    FONT.get_or_init(|| {
        plotters::style::register_font(FONT_NAME, FontStyle::Normal, FONT_BYTES)
            .map_err(|_| "the embedded DejaVu Sans font could not be parsed".to_string())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

const PAD: u32 = 10;
const GAP: u32 = 6;
const FONT_PX: u32 = 14;
const LINE: u32 = 18;
const HEADER: u32 = 30;
const MIN_SIDE: u32 = 112;
const MAX_PAIRS_PER_ROW: usize = 4;

/// Writes a PNG grid of `x_adv[i]` (left) beside `x[i]` (right) for every example, with "true: …" and "adv: …"
/// (the prediction on the adversarial image, red when wrong) under each pair. `x`, `x_adv`: `[B, C, H, W]` in [0, 1]
/// with C = 1 or 3; `labels`, `preds`: `[B]` class indices; `class_names[i]` names class i (indices are shown
/// without it). Small images are scaled up (nearest neighbour) to at least 112 px. Written atomically.
pub fn save_adversarial_grid(
    path: &Path,
    x: &Tensor,
    x_adv: &Tensor,
    labels: &Tensor,
    preds: &Tensor,
    class_names: Option<&[String]>,
) -> Result<()> {
    let xs = x.size();
    ensure!(xs.len() == 4, "x must be [B, C, H, W], got {xs:?}");
    ensure!(x_adv.size() == xs, "x_adv has shape {:?}, x has {xs:?}", x_adv.size());
    ensure!(xs[1] == 1 || xs[1] == 3, "images need 1 or 3 channels, got {}", xs[1]);
    let (b, h, w) = (xs[0] as usize, xs[2] as u32, xs[3] as u32);
    ensure!(b > 0 && h > 0 && w > 0, "nothing to draw: x has shape {xs:?}");
    ensure!(labels.size() == [b as i64], "labels have shape {:?}, expected [{b}]", labels.size());
    ensure!(preds.size() == [b as i64], "preds have shape {:?}, expected [{b}]", preds.size());
    ensure_font()?;

    let clean = to_rgb8(x)?;
    let adv = to_rgb8(x_adv)?;
    let labels = to_i64(labels)?;
    let preds = to_i64(preds)?;
    let name = |c: i64| -> String {
        class_names
            .and_then(|n| usize::try_from(c).ok().and_then(|i| n.get(i)))
            .cloned()
            .unwrap_or_else(|| c.to_string())
    };
    let texts: Vec<(String, String, bool)> = (0..b)
        .map(|i| (format!("true: {}", name(labels[i])), format!("adv: {}", name(preds[i])), preds[i] == labels[i]))
        .collect();

    let font: FontDesc = (FONT_NAME, FONT_PX).into_font();
    let text_w = |s: &str| -> Result<u32> { Ok(font.box_size(s).map_err(|e| anyhow!("measuring text: {e:?}"))?.0) };
    let scale = MIN_SIDE.div_ceil(h.max(w)).max(1);
    let (sh, sw) = (h * scale, w * scale);
    let pair_w = 2 * sw + GAP;
    let mut widest = pair_w;
    for (a, c, _) in &texts {
        widest = widest.max(text_w(a)?).max(text_w(c)?);
    }
    let cell_w = widest + 2 * PAD;
    let cell_h = sh + 4 + 2 * LINE + PAD;
    let cols = b.min(MAX_PAIRS_PER_ROW);
    let rows = b.div_ceil(cols);
    let header = "each pair: adversarial (left), clean (right)";
    let width = (cols as u32 * cell_w).max(text_w(header)? + 2 * PAD);
    let height = HEADER + rows as u32 * cell_h;

    let mut buf = vec![255u8; width as usize * height as usize * 3];
    let pixels = (h * w) as usize * 3;
    let mut origins = Vec::with_capacity(b);
    for i in 0..b {
        let (r, c) = ((i / cols) as u32, (i % cols) as u32);
        let x0 = c * cell_w + (cell_w - pair_w) / 2;
        let y0 = HEADER + r * cell_h;
        blit(&mut buf, width, &adv[i * pixels..(i + 1) * pixels], w, h, scale, x0, y0);
        blit(&mut buf, width, &clean[i * pixels..(i + 1) * pixels], w, h, scale, x0 + sw + GAP, y0);
        origins.push((c * cell_w, y0 + sh + 4));
    }
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        let draw = |s: &str, pos: (i32, i32), color: &RGBColor| -> Result<()> {
            root.draw_text(s, &font.color(color), pos).map_err(|e| anyhow!("drawing text: {e:?}"))
        };
        draw(header, (PAD as i32, 8), &BLACK)?;
        let wrong = RGBColor(200, 20, 20);
        let right = RGBColor(20, 120, 40);
        for ((x0, y0), (t, p, ok)) in origins.iter().zip(&texts) {
            draw(t, ((x0 + PAD) as i32, *y0 as i32), &BLACK)?;
            draw(p, ((x0 + PAD) as i32, (y0 + LINE) as i32), if *ok { &right } else { &wrong })?;
        }
        root.present().map_err(|e| anyhow!("rendering the grid: {e:?}"))?;
    }
    let img = image::RgbImage::from_raw(width, height, buf).context("grid buffer has the wrong size")?;
    fsutil::atomic_write_path(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png).with_context(|| format!("encoding PNG {}", path.display()))
    })
}

/// `[B, C, H, W]` in [0, 1] → RGB bytes `[B, H, W, 3]` (grey images repeated over the channels).
fn to_rgb8(x: &Tensor) -> Result<Vec<u8>> {
    let mut t = x.f_detach()?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?;
    if t.size()[1] == 1 {
        t = t.f_repeat([1, 3, 1, 1])?;
    }
    let t = t
        .f_clamp(0.0, 1.0)?
        .f_mul_scalar(255.0)?
        .f_round()?
        .f_to_kind(Kind::Uint8)?
        .f_permute([0, 2, 3, 1])?
        .f_contiguous()?
        .f_flatten(0, -1)?;
    Ok(Vec::<u8>::try_from(&t)?)
}

fn to_i64(t: &Tensor) -> Result<Vec<i64>> {
    Ok(Vec::<i64>::try_from(&t.f_detach()?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Int64)?)?)
}

/// Copies an RGB image (`w`×`h`) into `buf` (row width `bw`) at (`x0`, `y0`), each pixel as a `scale`² block.
#[allow(clippy::too_many_arguments)]
fn blit(buf: &mut [u8], bw: u32, img: &[u8], w: u32, h: u32, scale: u32, x0: u32, y0: u32) {
    for py in 0..h * scale {
        for px in 0..w * scale {
            let s = (((py / scale) * w + px / scale) * 3) as usize;
            let d = (((y0 + py) * bw + x0 + px) * 3) as usize;
            buf[d..d + 3].copy_from_slice(&img[s..s + 3]);
        }
    }
}
