// pybind11 bindings of the planner: repro_fast._C. Python-facing wrapper:
// repro_fast/_planner_cpp.py (it packs the batch and splits the results).
//
// Arrays come in as py::array_t with c_style and no forcecast: an array that already is
// C-contiguous with the right dtype is used in place (no copy); a safe cast (int32 -> int64,
// a list) makes one converted copy; an unsafe one (float -> int) is a TypeError.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "planner.hpp"

namespace py = pybind11;

namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

template <typename T>
void require_1d(const CArray<T>& a, const char* name) {
  if (a.ndim() != 1) {
    throw py::value_error(std::string(name) + ": expected a 1-D array, got " + std::to_string(a.ndim()) +
                          " dimensions");
  }
}

// A numpy array that owns `v` (moved to the heap; freed with the array): no copy of the data.
py::array_t<int64_t> to_numpy(std::vector<int64_t>&& v) {
  auto* owned = new std::vector<int64_t>(std::move(v));
  py::capsule free_when_done(owned, [](void* p) { delete static_cast<std::vector<int64_t>*>(p); });
  return py::array_t<int64_t>(static_cast<py::ssize_t>(owned->size()), owned->data(), free_when_done);
}

std::shared_ptr<repro::TokenTable> make_table(const CArray<uint8_t>& bytes, const CArray<int64_t>& offsets,
                                              const CArray<bool>& blank) {
  require_1d(bytes, "token_bytes");
  require_1d(offsets, "token_offsets");
  require_1d(blank, "blank");
  std::vector<uint8_t> blank_bytes(blank.data(), blank.data() + blank.size());
  return std::make_shared<repro::TokenTable>(
      std::vector<uint8_t>(bytes.data(), bytes.data() + bytes.size()),
      std::vector<int64_t>(offsets.data(), offsets.data() + offsets.size()), std::move(blank_bytes));
}

std::unique_ptr<repro::Planner> make_planner(std::shared_ptr<repro::TokenTable> table,
                                             std::optional<py::bytes> marker,
                                             std::optional<int64_t> marker_id,
                                             std::optional<std::vector<py::bytes>> suffixes,
                                             std::optional<CArray<int64_t>> boundary_ids) {
  using Marker = repro::PlannerConfig::Marker;
  repro::PlannerConfig config;
  if (marker && marker_id) throw py::value_error("Planner: give marker or marker_id, not both");
  if (marker) {
    config.marker_mode = Marker::kText;
    config.marker = std::string(*marker);
  } else if (marker_id) {
    config.marker_mode = Marker::kTokenId;
    config.marker_id = *marker_id;
  }
  if (suffixes && boundary_ids) throw py::value_error("Planner: give suffixes or boundary_ids, not both");
  if (boundary_ids) {
    require_1d(*boundary_ids, "boundary_ids");
    config.boundary_by_id = true;
    config.boundary_ids.assign(boundary_ids->data(), boundary_ids->data() + boundary_ids->size());
  } else if (suffixes) {
    for (const py::bytes& s : *suffixes) config.suffixes.emplace_back(std::string(s));
  }
  return std::make_unique<repro::Planner>(std::move(table), std::move(config));
}

// Runs the planner on spans that the caller keeps alive, without the GIL, and wraps the
// results as numpy arrays: (E [B], F [B], candidates (packed), candidates_cu [B + 1]).
py::tuple run_planner(const repro::Planner& planner, const std::vector<repro::Span>& spans, int64_t num_ids) {
  const auto batch = static_cast<py::ssize_t>(spans.size());
  py::array_t<int64_t> think_begin(batch), think_end(batch), candidates_cu(batch + 1);
  int64_t* E = think_begin.mutable_data();
  int64_t* F = think_end.mutable_data();
  int64_t* ccu = candidates_cu.mutable_data();
  std::vector<int64_t> candidates;
  {
    // Pure C++ on buffers that the arguments keep alive: other Python threads may run.
    py::gil_scoped_release no_gil;
    candidates.reserve(static_cast<size_t>(num_ids / 16 + 16));
    planner.plan_batch(spans, E, F, candidates, ccu);
  }
  return py::make_tuple(think_begin, think_end, to_numpy(std::move(candidates)), candidates_cu);
}

py::tuple plan_batch(const repro::Planner& planner, const CArray<int64_t>& ids, const CArray<int64_t>& cu) {
  require_1d(ids, "ids");
  require_1d(cu, "cu_seqlens");
  if (cu.size() < 1) throw py::value_error("cu_seqlens: needs at least one entry (0)");
  const int64_t batch = static_cast<int64_t>(cu.size()) - 1;
  const auto spans = repro::spans_of_packed(ids.data(), static_cast<int64_t>(ids.size()), cu.data(), batch);
  return run_planner(planner, spans, static_cast<int64_t>(ids.size()));
}

// The same on a list of 1-D arrays, one per response, so that a batch held as separate arrays
// (the scorer's) is read in place instead of being packed into a fresh copy first.
py::tuple plan_list(const repro::Planner& planner, const std::vector<CArray<int64_t>>& responses) {
  std::vector<repro::Span> spans;
  spans.reserve(responses.size());
  int64_t num_ids = 0;
  for (size_t b = 0; b < responses.size(); ++b) {
    const auto& r = responses[b];
    if (r.ndim() != 1) {
      throw py::value_error("responses[" + std::to_string(b) + "]: expected a 1-D array, got " +
                            std::to_string(r.ndim()) + " dimensions");
    }
    spans.push_back(repro::Span{r.data(), static_cast<int64_t>(r.size())});
    num_ids += static_cast<int64_t>(r.size());
  }
  return run_planner(planner, spans, num_ids);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "C++ host-side planner of repro_fast (SPEC §1, §3); see repro_fast/_planner_cpp.py";

  py::class_<repro::TokenTable, std::shared_ptr<repro::TokenTable>>(m, "TokenTable")
      .def(py::init(&make_table), py::arg("token_bytes"), py::arg("token_offsets"), py::arg("blank"),
           "The bytes of every token (uint8, concatenated), int64 offsets [vocab + 1] into them, and the\n"
           "bool blank table [vocab]. Copied once and kept.")
      .def_property_readonly("vocab_size", &repro::TokenTable::vocab_size);

  py::class_<repro::Planner>(m, "Planner")
      .def(py::init(&make_planner), py::arg("table"), py::kw_only(), py::arg("marker") = py::none(),
           py::arg("marker_id") = py::none(), py::arg("suffixes") = py::none(),
           py::arg("boundary_ids") = py::none(),
           "marker: think_end as UTF-8 bytes (text rule) or marker_id: its token id (authors' code), or\n"
           "neither (no think end). suffixes: boundary suffixes as UTF-8 bytes (text rule) or\n"
           "boundary_ids: token ids that end a segment (authors' code).")
      .def("plan_batch", &plan_batch, py::arg("ids"), py::arg("cu_seqlens"),
           "Packed int64 ids and cu_seqlens [B + 1] -> (E [B], F [B], candidates (packed, int64),\n"
           "candidates_cu [B + 1]). Candidates are indices into their own response.")
      .def("plan_list", &plan_list, py::arg("responses"),
           "The same as plan_batch on a list of 1-D int64 arrays (read in place, not packed).");

}
