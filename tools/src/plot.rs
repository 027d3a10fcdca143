//! Attention maps as PNG heatmaps (plotters' bitmap backend): a grid of panels, one per head (or one), the key
//! tokens along the bottom, the query tokens down the left, a colour scale and titles. Text is drawn with
//! DejaVu Sans from the `dejavu` crate through ab_glyph, so no system font is needed (it covers Latin, Greek,
//! Cyrillic and Arabic letters).

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;

/// The font family name the bundled font is registered under.
const FONT: &str = "qkv-sans";
const TITLE_PX: u32 = 18;
const LABEL_PX: u32 = 12;
/// Panel side in pixels aimed at (cells are 6-28 px wide).
const PANEL_PX: usize = 300;
const GAP: u32 = 16;

/// One heatmap: `rows` x `cols` weights in `[0, 1]`, row-major, and its title.
pub struct Panel {
    pub title: String,
    pub weights: Vec<f32>,
}

/// A figure: panels sharing the same axes (the query tokens down, the key tokens across).
pub struct Figure {
    pub title: String,
    /// Key tokens (columns), e.g. the source of a translation.
    pub cols: Vec<String>,
    /// Query tokens (rows), e.g. the generated target tokens.
    pub rows: Vec<String>,
    pub panels: Vec<Panel>,
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // DejaVu Sans is a valid TrueType file: registering it cannot fail
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// A token as a label: surrounding whitespace trimmed (llama2.c's `\n<s>\n`) unless it is all whitespace,
/// a space (SentencePiece's `▁`, byte-level BPE's `Ġ`, a space token) as `·`, a newline (`Ċ`) as `\n`, at
/// most 14 characters.
pub fn label(token: &str) -> String {
    let t = match token.trim() {
        "" => token,
        trimmed => trimmed,
    };
    let t = t.replace(['▁', 'Ġ', ' '], "·").replace(['Ċ', '\n'], "\\n");
    if t.chars().count() > 14 {
        t.chars().take(13).chain(['…']).collect()
    } else {
        t
    }
}

/// Width in pixels of `s` in the bundled font at `px` (registered first).
fn text_width(s: &str, px: u32) -> u32 {
    (FONT, px as f64).into_font().box_size(s).map_or(0, |(w, _)| w)
}

/// Write `fig` as a PNG to `path`: the panels in a grid of up to 4 columns. An error naming the path when it
/// cannot be written.
pub fn write_png(path: &Path, fig: &Figure) -> Result<(u32, u32)> {
    let (n_rows, n_cols) = (fig.rows.len(), fig.cols.len());
    if fig.panels.is_empty() || n_rows == 0 || n_cols == 0 {
        bail!("{}: nothing to draw ({n_rows} x {n_cols} weights)", path.display());
    }
    for p in &fig.panels {
        if p.weights.len() != n_rows * n_cols {
            bail!(
                "{}: panel {:?} holds {} weights, expected {n_rows} x {n_cols}",
                path.display(),
                p.title,
                p.weights.len()
            );
        }
    }
    // fail early, naming the file, when it cannot be created
    std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;

    register_font();
    let rows: Vec<String> = fig.rows.iter().map(|t| label(t)).collect();
    let cols: Vec<String> = fig.cols.iter().map(|t| label(t)).collect();
    let cell = (PANEL_PX / n_rows.max(n_cols)).clamp(6, 28) as u32;
    let label_px = LABEL_PX.min(cell.max(8));
    let left = rows.iter().map(|t| text_width(t, label_px)).max().unwrap_or(0) + 8;
    // key labels run down (rotated) unless each is a character or two (a transliteration's letters)
    let rotate = cols.iter().any(|t| t.chars().count() > 2);
    let bottom = match rotate {
        true => cols.iter().map(|t| text_width(t, label_px)).max().unwrap_or(0) + 8,
        false => label_px + 10,
    };
    let (pw, ph) = (cell * n_cols as u32, cell * n_rows as u32);
    let grid_cols = fig.panels.len().min(4) as u32;
    let grid_rows = (fig.panels.len() as u32).div_ceil(grid_cols);
    let panel_title = fig
        .panels
        .iter()
        .map(|p| text_width(&p.title, LABEL_PX + 2))
        .max()
        .unwrap_or(0);
    let (panel_w, panel_h) = (left + pw.max(panel_title) + GAP, TITLE_PX + 8 + ph + bottom + GAP);
    let scale_w = 60;
    let top = TITLE_PX + 16;
    let width = (GAP + grid_cols * panel_w + scale_w).max(text_width(&fig.title, TITLE_PX) + 2 * GAP);
    // the colour scale spans the first row of panels
    let scale_h = ph.clamp(60, 240);
    let height = (top + grid_rows * panel_h + GAP).max(top + TITLE_PX + 8 + scale_h + 2 * GAP);

    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("{}: drawing failed: {e}", path.display());
    root.fill(&WHITE).map_err(err)?;
    let font = |px: u32| (FONT, px as f64).into_font().color(&BLACK);
    root.draw(&Text::new(fig.title.clone(), (GAP as i32, 8), font(TITLE_PX)))
        .map_err(err)?;

    for (i, p) in fig.panels.iter().enumerate() {
        let (gx, gy) = (i as u32 % grid_cols, i as u32 / grid_cols);
        let x0 = (GAP + gx * panel_w + left) as i32;
        let y0 = (top + gy * panel_h + TITLE_PX + 8) as i32;
        root.draw(&Text::new(
            p.title.clone(),
            (x0, y0 - TITLE_PX as i32 - 2),
            font(LABEL_PX + 2),
        ))
        .map_err(err)?;
        for r in 0..n_rows {
            for c in 0..n_cols {
                let w = p.weights[r * n_cols + c].clamp(0.0, 1.0);
                let (x, y) = (x0 + (c as u32 * cell) as i32, y0 + (r as u32 * cell) as i32);
                let colour = ViridisRGB::get_color(w);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell as i32, y + cell as i32)],
                    colour.filled(),
                ))
                .map_err(err)?;
            }
        }
        // query tokens right-aligned left of the rows, key tokens rotated under the columns
        for (r, t) in rows.iter().enumerate() {
            let y = y0 + (r as u32 * cell + cell / 2) as i32;
            let style = font(label_px).pos(Pos::new(HPos::Right, VPos::Center));
            root.draw(&Text::new(t.clone(), (x0 - 4, y), style)).map_err(err)?;
        }
        for (c, t) in cols.iter().enumerate() {
            let x = x0 + (c as u32 * cell + cell / 2) as i32;
            let text = if rotate {
                let style = font(label_px).transform(FontTransform::Rotate90);
                Text::new(t.clone(), (x + label_px as i32 / 2, y0 + ph as i32 + 4), style)
            } else {
                let style = font(label_px).pos(Pos::new(HPos::Center, VPos::Top));
                Text::new(t.clone(), (x, y0 + ph as i32 + 4), style)
            };
            root.draw(&text).map_err(err)?;
        }
    }

    // colour scale: 0 at the bottom, 1 at the top
    let (sx, sy, sh) = (
        (width - scale_w + 10) as i32,
        top as i32 + TITLE_PX as i32 + 8,
        scale_h as i32,
    );
    for y in 0..sh {
        let w = 1.0 - y as f32 / (sh - 1) as f32;
        root.draw(&Rectangle::new(
            [(sx, sy + y), (sx + 16, sy + y + 1)],
            ViridisRGB::get_color(w).filled(),
        ))
        .map_err(err)?;
    }
    for (w, y) in [(1.0, sy), (0.5, sy + sh / 2), (0.0, sy + sh - 1)] {
        let style = font(LABEL_PX).pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(format!("{w:.1}"), (sx + 20, y), style))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok((width, height))
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn labels_show_spaces_and_newlines() {
        assert_eq!(label("\n<s>\n"), "<s>");
        assert_eq!(label(" Once"), "Once");
        assert_eq!(label(" "), "·");
        assert_eq!(label("▁the"), "·the");
        assert_eq!(label("Ġworld"), "·world");
        assert_eq!(label("Ċ"), "\\n");
        assert_eq!(label("abcdefghijklmnopq"), "abcdefghijklm…");
    }
}
