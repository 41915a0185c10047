#pragma once
// Catch2 v3 when found, else v2 (Debian ships 2.13).
#if __has_include(<catch2/catch_test_macros.hpp>)
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#define GRPOKIT_CATCH3 1
#else
#include <catch2/catch.hpp>
#endif

// REQUIRE_ERROR(expr, text): expr throws and the message contains text (v2 and v3).
#if defined(GRPOKIT_CATCH3)
#define REQUIRE_ERROR(expr, text) REQUIRE_THROWS_WITH(expr, Catch::Matchers::ContainsSubstring(text))
#else
#define REQUIRE_ERROR(expr, text) REQUIRE_THROWS_WITH(expr, Catch::Contains(text))
#endif
