//! The video every simulated job produces: a small, genuinely playable MP4.
//!
//! The file is built by hand at first use, without an encoder: an ISO base
//! media file (`ftyp`, `moov` before `mdat` — "fast start" — and a fixed-size
//! `free` box) holding one H.264 Baseline track of 64×36 pixels, 24 frames at
//! 12 fps (2 s). Frame 0 is an IDR picture whose macroblocks are all `I_PCM`
//! (raw samples: a colour gradient, so no transform or entropy coding is
//! needed); frames 1–23 are P pictures in which every macroblock is skipped,
//! i.e. they repeat frame 0. Decoders (ffmpeg, browsers) play it; `file`
//! calls it "ISO Media, MP4 Base Media v1". It is about 5 KB.
//!
//! Every copy has the same bytes except the 64-byte `free` box, into which the
//! simulator stamps the job id (`byok-sim <id>`): players ignore `free`, and a
//! test can tell which job a stored video came from.

use std::sync::OnceLock;

use bytes::Bytes;

/// Width and height shown (the coded picture is 64×48, cropped at the bottom).
const WIDTH: u16 = 64;
const HEIGHT: u16 = 36;
const WIDTH_MBS: usize = 4;
const HEIGHT_MBS: usize = 3;
const FRAMES: u32 = 24;
/// Media time scale: ticks per second; one frame lasts one tick.
const FPS: u32 = 12;
/// Size of the stamp box, header included.
const STAMP_BOX_LEN: usize = 64;
const STAMP_PREFIX: &[u8] = b"byok-sim ";

/// The template with an empty stamp, and where the stamp's payload starts.
struct Template {
    bytes: Vec<u8>,
    stamp_at: usize,
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(build)
}

/// The MP4 with `job_id` stamped into its `free` box (cut to fit).
pub fn mp4_for(job_id: &str) -> Bytes {
    let t = template();
    let mut bytes = t.bytes.clone();
    let room = STAMP_BOX_LEN - 8;
    let mut stamp = Vec::with_capacity(room);
    stamp.extend_from_slice(STAMP_PREFIX);
    stamp.extend_from_slice(job_id.as_bytes());
    stamp.truncate(room);
    bytes[t.stamp_at..t.stamp_at + stamp.len()].copy_from_slice(&stamp);
    Bytes::from(bytes)
}

/// A download's answer: `mp4` followed, when `padding` is not 0, by a `free` box of
/// `padding` bytes (header included; 8..=[`crate::config::MAX_VIDEO_PADDING`], which
/// `SimConfig::validate` ensures). The zeros are streamed in 64 KiB pieces of one static
/// buffer, so a large padding costs no memory. Sets `Content-Type: video/mp4` and
/// `Content-Length`.
pub(crate) fn download_response(mp4: Bytes, padding: u64) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    use axum::response::IntoResponse as _;

    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    let total = mp4.len() as u64 + padding;
    let mut response = if padding == 0 {
        mp4.into_response()
    } else {
        let size = u32::try_from(padding).unwrap_or(u32::MAX);
        let mut first = Vec::with_capacity(mp4.len() + 8);
        first.extend_from_slice(&mp4);
        first.extend_from_slice(&size.to_be_bytes());
        first.extend_from_slice(b"free");
        let zeros = u64::from(size).saturating_sub(8);
        let pieces = zeros.div_ceil(ZEROS.len() as u64);
        let rest = (0..pieces).map(move |i| {
            let left = zeros - i * ZEROS.len() as u64;
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(ZEROS.len());
            Ok::<_, std::convert::Infallible>(Bytes::from_static(&ZEROS[..n]))
        });
        let chunks = std::iter::once(Ok(Bytes::from(first))).chain(rest);
        axum::body::Body::from_stream(futures::stream::iter(chunks)).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    response
}

fn build() -> Template {
    let sps = nal(3, 7, &sps_rbsp());
    let pps = nal(3, 8, &pps_rbsp());
    let mut samples = vec![nal(3, 5, &idr_rbsp())];
    for n in 1..FRAMES {
        samples.push(nal(2, 1, &p_skip_rbsp(n)));
    }
    // Samples in the MP4 are length-prefixed NAL units (avcC lengthSize 4).
    let samples: Vec<Vec<u8>> = samples
        .into_iter()
        .map(|unit| {
            let mut s = u32_be(unit.len()).to_vec();
            s.extend_from_slice(&unit);
            s
        })
        .collect();

    let ftyp = mp4_box(b"ftyp", &{
        let mut b = b"isom".to_vec();
        b.extend_from_slice(&0x200u32.to_be_bytes());
        for brand in [b"isom", b"iso2", b"avc1", b"mp41"] {
            b.extend_from_slice(brand);
        }
        b
    });
    let stamp = mp4_box(b"free", &[0u8; STAMP_BOX_LEN - 8]);
    let mdat_payload: Vec<u8> = samples.concat();
    let mdat = mp4_box(b"mdat", &mdat_payload);

    // The chunk offset depends on the size of `moov`, which does not depend
    // on the offset's value (a fixed-width field): build once to measure.
    let probe = moov(&sps, &pps, &samples, 0);
    let offset = ftyp.len() + probe.len() + stamp.len() + 8;
    let moov = moov(&sps, &pps, &samples, offset);

    let stamp_at = ftyp.len() + moov.len() + 8;
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&ftyp);
    bytes.extend_from_slice(&moov);
    bytes.extend_from_slice(&stamp);
    bytes.extend_from_slice(&mdat);
    Template { bytes, stamp_at }
}

// ---------------------------------------------------------------- H.264 --

/// A bit writer for RBSP syntax (ITU-T H.264 §7.2).
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    bit: u8,
}

impl Bits {
    fn u(&mut self, bits: u32, value: u32) {
        for i in (0..bits).rev() {
            self.bit_push((value >> i) & 1 == 1);
        }
    }
    fn bit_push(&mut self, one: bool) {
        if self.bit == 0 {
            self.bytes.push(0);
        }
        if one {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 0x80 >> self.bit;
        }
        self.bit = (self.bit + 1) % 8;
    }
    /// Unsigned Exp-Golomb, `ue(v)`.
    fn ue(&mut self, value: u32) {
        let v = value + 1;
        let len = 32 - v.leading_zeros();
        self.u(len - 1, 0);
        self.u(len, v);
    }
    /// Signed Exp-Golomb, `se(v)`; only 0 is used here.
    fn se_zero(&mut self) {
        self.ue(0);
    }
    fn align_zero(&mut self) {
        while self.bit != 0 {
            self.bit_push(false);
        }
    }
    /// `rbsp_trailing_bits()`.
    fn trailing(mut self) -> Vec<u8> {
        self.bit_push(true);
        self.align_zero();
        self.bytes
    }
}

fn sps_rbsp() -> Vec<u8> {
    let mut b = Bits::default();
    b.u(8, 66); // profile_idc: Baseline
    b.u(8, 0xC0); // constraint_set0/1: also Main-compatible
    b.u(8, 30); // level_idc 3.0
    b.ue(0); // seq_parameter_set_id
    b.ue(0); // log2_max_frame_num_minus4: frame_num has 4 bits
    b.ue(2); // pic_order_cnt_type 2: order follows frame_num (no B frames)
    b.ue(1); // max_num_ref_frames
    b.u(1, 0); // gaps_in_frame_num_value_allowed_flag
    b.ue(WIDTH_MBS as u32 - 1);
    b.ue(HEIGHT_MBS as u32 - 1);
    b.u(1, 1); // frame_mbs_only_flag
    b.u(1, 1); // direct_8x8_inference_flag
    b.u(1, 1); // frame_cropping_flag
    b.ue(0); // left, right, top (in units of 2 pixels for 4:2:0 frames)
    b.ue(0);
    b.ue(0);
    b.ue(u32::from((HEIGHT_MBS as u16 * 16 - HEIGHT) / 2)); // bottom
    b.u(1, 0); // vui_parameters_present_flag
    b.trailing()
}

fn pps_rbsp() -> Vec<u8> {
    let mut b = Bits::default();
    b.ue(0); // pic_parameter_set_id
    b.ue(0); // seq_parameter_set_id
    b.u(1, 0); // entropy_coding_mode_flag: CAVLC
    b.u(1, 0); // bottom_field_pic_order_in_frame_present_flag
    b.ue(0); // num_slice_groups_minus1
    b.ue(0); // num_ref_idx_l0_default_active_minus1
    b.ue(0); // num_ref_idx_l1_default_active_minus1
    b.u(1, 0); // weighted_pred_flag
    b.u(2, 0); // weighted_bipred_idc
    b.se_zero(); // pic_init_qp_minus26
    b.se_zero(); // pic_init_qs_minus26
    b.se_zero(); // chroma_qp_index_offset
    b.u(1, 0); // deblocking_filter_control_present_flag
    b.u(1, 0); // constrained_intra_pred_flag
    b.u(1, 0); // redundant_pic_cnt_present_flag
    b.trailing()
}

/// The IDR picture: every macroblock `I_PCM`, painted with a gradient.
fn idr_rbsp() -> Vec<u8> {
    let mut b = Bits::default();
    b.ue(0); // first_mb_in_slice
    b.ue(7); // slice_type: I (all slices)
    b.ue(0); // pic_parameter_set_id
    b.u(4, 0); // frame_num
    b.ue(0); // idr_pic_id
    b.u(1, 0); // no_output_of_prior_pics_flag
    b.u(1, 0); // long_term_reference_flag
    b.se_zero(); // slice_qp_delta
    for mb in 0..WIDTH_MBS * HEIGHT_MBS {
        let (mx, my) = (mb % WIDTH_MBS, mb / WIDTH_MBS);
        b.ue(25); // mb_type I_PCM
        b.align_zero(); // pcm_alignment_zero_bit
        for y in 0..16 {
            for x in 0..16 {
                let (px, py) = (mx * 16 + x, my * 16 + y);
                // Luma in the video range, never 0 (older decoders reject 0).
                b.u(8, 40 + ((px * 2 + py * 3) * 170 / 267) as u32);
            }
        }
        for plane in 0..2 {
            for y in 0..8 {
                for x in 0..8 {
                    let (px, py) = (mx * 8 + x, my * 8 + y);
                    let v = if plane == 0 {
                        90 + px * 2
                    } else {
                        170 - py * 3
                    };
                    b.u(8, v as u32);
                }
            }
        }
    }
    b.trailing()
}

/// A P picture that skips every macroblock: it repeats the previous frame.
fn p_skip_rbsp(frame: u32) -> Vec<u8> {
    let mut b = Bits::default();
    b.ue(0); // first_mb_in_slice
    b.ue(5); // slice_type: P (all slices)
    b.ue(0); // pic_parameter_set_id
    b.u(4, frame % 16); // frame_num (reference pictures count up)
    b.u(1, 0); // num_ref_idx_active_override_flag
    b.u(1, 0); // ref_pic_list_modification_flag_l0
    b.u(1, 0); // adaptive_ref_pic_marking_mode_flag
    b.se_zero(); // slice_qp_delta
    b.ue((WIDTH_MBS * HEIGHT_MBS) as u32); // mb_skip_run: all of them
    b.trailing()
}

/// A NAL unit: header byte and the RBSP with emulation prevention (§7.4.1).
fn nal(ref_idc: u8, unit_type: u8, rbsp: &[u8]) -> Vec<u8> {
    let mut out = vec![(ref_idc << 5) | unit_type];
    let mut zeros = 0;
    for &byte in rbsp {
        if zeros >= 2 && byte <= 3 {
            out.push(3);
            zeros = 0;
        }
        out.push(byte);
        zeros = if byte == 0 { zeros + 1 } else { 0 };
    }
    out
}

// ------------------------------------------------------------------ MP4 --

fn u32_be(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes()
}

fn mp4_box(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(payload.len() + 8);
    b.extend_from_slice(&u32_be(payload.len() + 8));
    b.extend_from_slice(kind);
    b.extend_from_slice(payload);
    b
}

fn full_box(kind: &[u8; 4], version: u8, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![version];
    p.extend_from_slice(&flags.to_be_bytes()[1..]);
    p.extend_from_slice(payload);
    mp4_box(kind, &p)
}

/// The unity transformation matrix of `mvhd` and `tkhd`.
fn matrix() -> Vec<u8> {
    [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect()
}

fn moov(sps: &[u8], pps: &[u8], samples: &[Vec<u8>], chunk_offset: usize) -> Vec<u8> {
    let movie_timescale = 1000u32;
    let duration_ms = FRAMES * 1000 / FPS;

    let mut mvhd = Vec::new();
    mvhd.extend_from_slice(&0u32.to_be_bytes()); // creation_time
    mvhd.extend_from_slice(&0u32.to_be_bytes()); // modification_time
    mvhd.extend_from_slice(&movie_timescale.to_be_bytes());
    mvhd.extend_from_slice(&duration_ms.to_be_bytes());
    mvhd.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate 1.0
    mvhd.extend_from_slice(&0x0100u16.to_be_bytes()); // volume 1.0
    mvhd.extend_from_slice(&[0; 10]); // reserved
    mvhd.extend_from_slice(&matrix());
    mvhd.extend_from_slice(&[0; 24]); // pre_defined
    mvhd.extend_from_slice(&2u32.to_be_bytes()); // next_track_ID
    let mvhd = full_box(b"mvhd", 0, 0, &mvhd);

    let mut tkhd = Vec::new();
    tkhd.extend_from_slice(&[0; 8]); // creation, modification
    tkhd.extend_from_slice(&1u32.to_be_bytes()); // track_ID
    tkhd.extend_from_slice(&[0; 4]); // reserved
    tkhd.extend_from_slice(&duration_ms.to_be_bytes());
    tkhd.extend_from_slice(&[0; 8]); // reserved
    tkhd.extend_from_slice(&[0; 4]); // layer, alternate_group
    tkhd.extend_from_slice(&[0; 4]); // volume (video: 0), reserved
    tkhd.extend_from_slice(&matrix());
    tkhd.extend_from_slice(&(u32::from(WIDTH) << 16).to_be_bytes());
    tkhd.extend_from_slice(&(u32::from(HEIGHT) << 16).to_be_bytes());
    let tkhd = full_box(b"tkhd", 0, 0x3, &tkhd); // enabled, in movie

    let mut mdhd = Vec::new();
    mdhd.extend_from_slice(&[0; 8]);
    mdhd.extend_from_slice(&FPS.to_be_bytes());
    mdhd.extend_from_slice(&FRAMES.to_be_bytes());
    mdhd.extend_from_slice(&0x55C4u16.to_be_bytes()); // language "und"
    mdhd.extend_from_slice(&[0; 2]);
    let mdhd = full_box(b"mdhd", 0, 0, &mdhd);

    let mut hdlr = vec![0; 4]; // pre_defined
    hdlr.extend_from_slice(b"vide");
    hdlr.extend_from_slice(&[0; 12]);
    hdlr.extend_from_slice(b"VideoHandler\0");
    let hdlr = full_box(b"hdlr", 0, 0, &hdlr);

    let vmhd = full_box(b"vmhd", 0, 1, &[0; 8]);
    let url = full_box(b"url ", 0, 1, &[]); // data in this file
    let dref = full_box(b"dref", 0, 0, &[&1u32.to_be_bytes()[..], &url].concat());
    let dinf = mp4_box(b"dinf", &dref);

    let mut avcc = vec![1, 66, 0xC0, 30, 0xFF, 0xE1]; // lengthSize 4, one SPS
    avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(sps);
    avcc.push(1);
    avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(pps);
    let avcc = mp4_box(b"avcC", &avcc);

    let mut avc1 = vec![0; 6]; // reserved
    avc1.extend_from_slice(&1u16.to_be_bytes()); // data_reference_index
    avc1.extend_from_slice(&[0; 16]); // pre_defined, reserved
    avc1.extend_from_slice(&WIDTH.to_be_bytes());
    avc1.extend_from_slice(&HEIGHT.to_be_bytes());
    avc1.extend_from_slice(&0x0048_0000u32.to_be_bytes()); // 72 dpi
    avc1.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    avc1.extend_from_slice(&[0; 4]);
    avc1.extend_from_slice(&1u16.to_be_bytes()); // frame_count
    let mut compressor = [0u8; 32];
    let name = b"byok-sim";
    compressor[0] = name.len() as u8;
    compressor[1..=name.len()].copy_from_slice(name);
    avc1.extend_from_slice(&compressor);
    avc1.extend_from_slice(&0x0018u16.to_be_bytes()); // depth
    avc1.extend_from_slice(&(-1i16).to_be_bytes());
    avc1.extend_from_slice(&avcc);
    let avc1 = mp4_box(b"avc1", &avc1);
    let stsd = full_box(b"stsd", 0, 0, &[&1u32.to_be_bytes()[..], &avc1].concat());

    let count = u32_be(samples.len());
    let stts = full_box(
        b"stts",
        0,
        0,
        &[&1u32.to_be_bytes()[..], &count, &1u32.to_be_bytes()].concat(),
    );
    let stss = full_box(
        b"stss",
        0,
        0,
        &[1u32.to_be_bytes(), 1u32.to_be_bytes()].concat(),
    );
    let stsc = full_box(
        b"stsc",
        0,
        0,
        &[
            &1u32.to_be_bytes()[..],
            &1u32.to_be_bytes(),
            &count,
            &1u32.to_be_bytes(),
        ]
        .concat(),
    );
    let mut stsz = vec![0; 4]; // sizes vary
    stsz.extend_from_slice(&count);
    for s in samples {
        stsz.extend_from_slice(&u32_be(s.len()));
    }
    let stsz = full_box(b"stsz", 0, 0, &stsz);
    let stco = full_box(
        b"stco",
        0,
        0,
        &[1u32.to_be_bytes(), u32_be(chunk_offset)].concat(),
    );
    let stbl = mp4_box(b"stbl", &[stsd, stts, stss, stsc, stsz, stco].concat());
    let minf = mp4_box(b"minf", &[vmhd, dinf, stbl].concat());
    let mdia = mp4_box(b"mdia", &[mdhd, hdlr, minf].concat());
    let trak = mp4_box(b"trak", &[tkhd, mdia].concat());
    mp4_box(b"moov", &[mvhd, trak].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_video_is_small_and_an_mp4_with_the_job_id_stamped() {
        let a = mp4_for("job-a");
        let b = mp4_for("job-b");
        assert_eq!(&a[4..8], b"ftyp");
        assert!(a.len() < 8 * 1024, "{} bytes", a.len());
        assert_eq!(a.len(), b.len());
        let differing = a.iter().zip(b.iter()).filter(|(x, y)| x != y).count();
        assert_eq!(differing, 1, "only the stamp differs");
        let stamp = b"byok-sim job-a";
        assert!(a.windows(stamp.len()).any(|w| w == stamp));
        // Box sizes add up to the file size.
        let mut at = 0;
        let mut kinds = Vec::new();
        while at < a.len() {
            let size = u32::from_be_bytes(a[at..at + 4].try_into().unwrap()) as usize;
            kinds.push(String::from_utf8_lossy(&a[at + 4..at + 8]).into_owned());
            at += size;
        }
        assert_eq!(at, a.len());
        assert_eq!(kinds, ["ftyp", "moov", "free", "mdat"]);
    }

    #[test]
    fn long_ids_are_cut_to_the_stamp() {
        let long = "x".repeat(500);
        assert_eq!(mp4_for(&long).len(), mp4_for("short").len());
    }

    #[test]
    fn emulation_prevention_escapes_start_code_patterns() {
        assert_eq!(nal(0, 1, &[0, 0, 1, 0, 0, 0]), [1, 0, 0, 3, 1, 0, 0, 3, 0]);
    }

    #[test]
    fn exp_golomb() {
        let mut b = Bits::default();
        b.ue(0); // 1
        b.ue(1); // 010
        b.ue(25); // 0000 11010
        assert_eq!(b.trailing(), [0b1010_0000, 0b1101_0100]);
    }
}
