// Python module wfn_kernels._C: importing it registers the kernels (TORCH_LIBRARY_IMPL in the other
// translation units); the functions here only report how it was built.
#include <torch/extension.h>

#include "cpu/kernels.h"

namespace wfn {
#ifdef WFN_WITH_CUDA
bool built_with_cuda() { return true; }
#else
bool built_with_cuda() { return false; }
#endif
}  // namespace wfn

PYBIND11_MODULE(_C, m) {
  m.doc() = "wfn-kernels C++/CUDA kernels (registered as torch.ops.wfn.*)";
  m.def("cpu_capability", &wfn::cpu_capability, "SIMD level used by the CPU kernels");
  m.def("built_with_cuda", &wfn::built_with_cuda, "whether CUDA kernels were compiled in");
}
