// procpool - procpool::init().
#include "procpool/init.hpp"

#include "internal.hpp"

namespace procpool {

void init() {
  detail::start_zygote();
}

}  // namespace procpool
