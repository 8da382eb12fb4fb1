#!/bin/sh
echo "bazel coverage is not supported in podtrain's offline build" >&2
exit 1
