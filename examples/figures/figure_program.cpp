// circuitry — mechanistic analysis of attention-only transformers.
// SPDX-License-Identifier: MIT

// The main of figure program figure-NAME: compiled with CIRCUITRY_FIGURE set to the figure's
// function (figure.hpp), e.g. -DCIRCUITRY_FIGURE=ov_eigenvalues; the work is in run_figure
// (figure_main.cpp, in the circuitry_figures library). Nothing heavy is included here.

#ifndef CIRCUITRY_FIGURE
#error "compile with -DCIRCUITRY_FIGURE=<figure function>"
#endif
#define CIRCUITRY_FIGURE_STRING_(name) #name
#define CIRCUITRY_FIGURE_STRING(name) CIRCUITRY_FIGURE_STRING_(name)

namespace figures {
int run_figure(const char* function, int argc, char** argv);  // figure_main.cpp
}  // namespace figures

int main(int argc, char** argv) {
  return figures::run_figure(CIRCUITRY_FIGURE_STRING(CIRCUITRY_FIGURE), argc, argv);
}
