#include "catch_session.hpp"

#if __has_include(<catch2/catch_session.hpp>)
#include <catch2/catch_session.hpp>  // Catch2 v3: a compiled library
#else
#define CATCH_CONFIG_RUNNER  // Catch2 v2: its implementation, here only
#include <catch2/catch.hpp>
#endif

int run_catch_session(int argc, char** argv) { return Catch::Session().run(argc, argv); }
