// line_buffer.hpp — splits an untrusted byte stream into bounded lines (T24).
//
// Memory is bounded by `max_line`: a line longer than that is either split
// into `max_line`-sized pieces (Overflow::Split, for captured stdout/stderr,
// where nothing may be lost) or dropped up to its newline (Overflow::Discard,
// for the notify protocol, where an oversized line is an error to count).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace preforkd::core {

class LineBuffer {
 public:
  enum class Overflow { Split, Discard };

  LineBuffer(size_t max_line, Overflow overflow) : max_line_(max_line), overflow_(overflow) {}

  // Calls on_line(std::string_view) for each complete line (without '\n').
  // Returns the number of oversized lines dropped (Discard) during this call.
  template <typename OnLine>
  size_t feed(std::string_view data, OnLine&& on_line) {
    size_t dropped = 0;
    while (!data.empty()) {
      size_t nl = data.find('\n');
      std::string_view chunk = data.substr(0, nl);
      if (discarding_) {
        if (nl != std::string_view::npos) discarding_ = false;
      } else if (partial_.size() + chunk.size() > max_line_) {
        if (overflow_ == Overflow::Split) {
          // Emit full pieces; keep the remainder as the start of the next piece.
          std::string_view rest = chunk;
          while (partial_.size() + rest.size() > max_line_) {
            size_t take = max_line_ - partial_.size();
            partial_.append(rest.substr(0, take));
            on_line(std::string_view(partial_));
            partial_.clear();
            rest.remove_prefix(take);
          }
          partial_.append(rest);
          if (nl != std::string_view::npos) {
            on_line(std::string_view(partial_));
            partial_.clear();
          }
        } else {
          ++dropped;
          partial_.clear();
          discarding_ = nl == std::string_view::npos;
        }
      } else if (nl == std::string_view::npos) {
        partial_.append(chunk);
      } else if (partial_.empty()) {
        on_line(chunk);  // the common case: no copy
      } else {
        partial_.append(chunk);
        on_line(std::string_view(partial_));
        partial_.clear();
      }
      if (nl == std::string_view::npos) break;
      data.remove_prefix(nl + 1);
    }
    return dropped;
  }

  // Emits a trailing partial line (a stream that ended without '\n').
  template <typename OnLine>
  void flush(OnLine&& on_line) {
    if (!partial_.empty() && !discarding_) on_line(std::string_view(partial_));
    partial_.clear();
    discarding_ = false;
  }

  size_t buffered() const noexcept { return partial_.size(); }

  // The in-place upgrade hands a pipe over mid-line: the partial line and
  // whether an oversized one is being skipped.
  const std::string& partial() const noexcept { return partial_; }
  bool discarding() const noexcept { return discarding_; }
  void restore(std::string partial, bool discarding) {
    partial_ = std::move(partial);
    if (partial_.size() > max_line_) partial_.resize(max_line_);
    discarding_ = discarding;
  }

 private:
  std::string partial_;
  size_t max_line_;
  Overflow overflow_;
  bool discarding_ = false;
};

}  // namespace preforkd::core
