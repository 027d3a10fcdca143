//! Row and elementwise kernels, generic over [`Simd`].

use crate::simd::Simd;

/// `acc += x`.
#[inline(always)]
pub(crate) fn add<S: Simd>(s: S, acc: &mut [f32], x: &[f32]) {
    let l = S::LANES;
    let n = acc.len().min(x.len());
    let mut i = 0;
    while i + l <= n {
        let v = s.add(s.read(&acc[i..]), s.read(&x[i..]));
        s.write(&mut acc[i..], v);
        i += l;
    }
    if i < n {
        let v = s.add(s.read_partial(&acc[i..n]), s.read_partial(&x[i..n]));
        s.write_partial(&mut acc[i..n], v);
    }
}
