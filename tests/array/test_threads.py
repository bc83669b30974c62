"""The kernels run without the interpreter lock; concurrent calls give identical results."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

import ryzq


def test_concurrent_calls_are_identical():
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((512, 768)) * 0.02).astype(np.float32)
    expected = {layout: ryzq.quantize(w, layout=layout) for layout in ryzq.LAYOUTS}

    def work(i):
        layout = ryzq.LAYOUTS[i % len(ryzq.LAYOUTS)]
        t = ryzq.quantize(w, layout=layout)
        return layout, t, t.dequantize()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, range(50)))
    assert {layout for layout, _, _ in results} == set(ryzq.LAYOUTS)
    for layout, t, d in results:
        np.testing.assert_array_equal(t.data, expected[layout].data)
        np.testing.assert_array_equal(t.scales, expected[layout].scales)
        assert t.stats == expected[layout].stats
        np.testing.assert_array_equal(d, expected[layout].dequantize())
