"""Prints the directory, under the install prefix given as argv[1], where
this Python looks for packages: /usr/lib/python3/dist-packages for /usr on
Debian, /usr/local/lib/python3.X/dist-packages for /usr/local, else the
prefix's site-packages. Used by `cmake --install`."""
import os
import sys
import sysconfig

prefix = os.path.abspath(sys.argv[1])
for p in sys.path:
    if p.startswith(prefix + os.sep) and p.endswith(("dist-packages", "site-packages")):
        print(p)
        break
else:
    print(sysconfig.get_path("purelib", "posix_prefix", vars={"base": prefix, "platbase": prefix}))
