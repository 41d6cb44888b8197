// The few C++ runtime symbols TFLite Micro's objects refer to, so that the firmware links
// without libstdc++ (TFLite Micro uses no exceptions, no RTTI and no heap). Deleting
// destructors of its classes name operator delete but are never called.

#include <cstddef>
#include <cstdlib>

void operator delete(void*) noexcept { abort(); }
void operator delete(void*, std::size_t) noexcept { abort(); }
extern "C" void __cxa_pure_virtual() { abort(); }
