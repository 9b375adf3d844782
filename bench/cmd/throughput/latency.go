package main

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's resolution: 1<<subBits buckets per power of
// two, so a quantile is off by at most 1/(2<<subBits), about 1.6%.
const subBits = 5

// nBuckets covers latencies up to 2^40 ns (about 18 minutes); longer ones
// go into the last bucket.
const nBuckets = (41 - subBits) << subBits

// histogram counts latencies in log-linear buckets. Recording is an index
// computation and an increment, with no allocation, so that it adds little
// to what is measured. The zero value is empty and ready to use; a
// histogram is not safe for concurrent use (each goroutine keeps its own
// and they are merged once it is done).
type histogram struct {
	n       int64
	buckets [nBuckets]int64
}

func bucketOf(ns uint64) int {
	if ns < 1<<subBits {
		return int(ns)
	}
	shift := bits.Len64(ns) - subBits - 1
	i := shift<<subBits + int(ns>>shift)
	return min(i, nBuckets-1)
}

// bucketMid returns the middle of bucket i's range, in nanoseconds.
func bucketMid(i int) float64 {
	if i < 1<<subBits {
		return float64(i)
	}
	shift := i>>subBits - 1
	lo := uint64(i-shift<<subBits) << shift
	return float64(lo) + float64(uint64(1)<<shift)/2
}

func (h *histogram) record(d time.Duration) {
	h.buckets[bucketOf(uint64(max(d, 0)))]++
	h.n++
}

func (h *histogram) merge(o *histogram) {
	h.n += o.n
	for i, c := range o.buckets {
		h.buckets[i] += c
	}
}

// quantile returns the latency at quantile q (0 < q ≤ 1), the middle of
// the bucket holding the ⌈q·n⌉-th smallest latency, or 0 when empty.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := max(int64(math.Ceil(q*float64(h.n))), 1)
	var seen int64
	for i, c := range h.buckets {
		seen += c
		if seen >= rank {
			return time.Duration(bucketMid(i))
		}
	}
	return time.Duration(bucketMid(nBuckets - 1))
}
