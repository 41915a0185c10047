#pragma once
// The test programs' main functions (main.cpp, device/main.cpp, mpi/main.cpp) run their test cases
// through this. It is defined in catch_session.cpp, the one unit that compiles Catch2's
// implementation (v2 is header-only and takes longer to compile than any test: 20 s at -O2, over
// a minute under the sanitizers).
int run_catch_session(int argc, char** argv);
