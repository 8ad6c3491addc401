// A program that uses circuitry the way a project consuming it by fetchcontent would.
// Built and run by the CTest test circuitry.consumer.fetchcontent (see tests/CMakeLists.txt).
#include <circuitry/error.hpp>
#include <circuitry/types.hpp>
#include <iostream>
#include <string>

int main() {
  circuitry::Matrix<double> m(2, 2);
  m << 1.0, 2.0, 3.0, 4.0;
  const circuitry::RowVector<double> x = circuitry::RowVector<double>::Ones(2);
  const circuitry::RowVector<double> y = x * m;  // the row-vector convention: x W
  if (y(0) != 4.0 || y(1) != 6.0) {
    std::cerr << "x W = " << y << ", expected 4 6\n";
    return 1;
  }
  try {
    const std::string found = std::to_string(m.rows()) + " x 3";
    throw circuitry::shape_error("matrix 'W': expected 2 x 2, found " + found);
  } catch (const circuitry::error& e) {
    if (e.id() != "circuitry.shape_error") {
      std::cerr << "unexpected id: " << e.id() << '\n';
      return 1;
    }
    std::cout << "caught: " << e.what() << '\n';
  }
  std::cout << "circuitry consumed by fetchcontent: ok\n";
  return 0;
}
