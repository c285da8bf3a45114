// Work distribution shared by the CPU loops.
#pragma once

#include <ATen/Parallel.h>

#include <atomic>
#include <cstdint>

namespace known_ops {

// Like at::parallel_for(0, n, 1, body), but the threads take items one at a
// time from a shared counter: a thread that is slowed down (a busy virtual
// CPU, another process) no longer holds the others back at the end, as with
// equal static shares.  Items must write disjoint outputs, so that results do
// not depend on which thread runs which item.
template <class F>
void parallel_items(int64_t n, const F& body) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) body(i, i + 1);
  });
}

}  // namespace known_ops
