// The OpenMPI peer of bench_allreduce: MPI_Allreduce (sum, in place) of the
// reference MLP's gradient, 1,863,690 float32 in one flat buffer, between
// the processes mpirun starts (2). Rank 0 prints
//   MPI_ALLREDUCE median_ms=<median> p90_ms=<p90> iterations=<n>
// Which transport it uses is mpirun's choice (bench_allreduce.sh runs it
// once with TCP on loopback only, once with shared memory).
//
//   mpirun --allow-run-as-root -np 2 --mca btl self,tcp \
//     --mca btl_tcp_if_include lo mpi_allreduce 150

#include <mpi/mpi.h>  // Debian: /usr/include/x86_64-linux-gnu/mpi

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const int iterations = argc > 1 ? std::atoi(argv[1]) : 150;
  constexpr int kFloats = 1863690;
  std::vector<float> buffer(kFloats, 0.0f);
  for (int i = 0; i < 10; ++i) {  // warm-up: connections, buffers
    MPI_Allreduce(MPI_IN_PLACE, buffer.data(), kFloats, MPI_FLOAT, MPI_SUM,
                  MPI_COMM_WORLD);
  }
  std::vector<double> ms;
  for (int i = 0; i < iterations; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double start = MPI_Wtime();
    MPI_Allreduce(MPI_IN_PLACE, buffer.data(), kFloats, MPI_FLOAT, MPI_SUM,
                  MPI_COMM_WORLD);
    ms.push_back((MPI_Wtime() - start) * 1e3);
  }
  if (rank == 0) {
    std::sort(ms.begin(), ms.end());
    std::printf("MPI_ALLREDUCE median_ms=%.3f p90_ms=%.3f iterations=%d\n",
                ms[ms.size() / 2], ms[ms.size() * 9 / 10], iterations);
  }
  MPI_Finalize();
  return 0;
}
