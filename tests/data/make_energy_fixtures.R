# Reference values of the Szekely-Rizzo energy statistic from R's energy package (mvnorm.e), for
# tests/test_stats_agreement.py. Run from tests/data:  Rscript make_energy_fixtures.R
# (made with R energy 1.7.11, Debian r-cran-energy). Input: energy_*.csv (written by numpy, seeded).
library(energy)
files <- sort(Sys.glob("energy_*.csv"))
out <- data.frame(file = files, statistic = NA_real_)
for (i in seq_along(files)) {
  x <- as.matrix(read.csv(files[i], header = FALSE))
  out$statistic[i] <- mvnorm.e(x)
}
out$energy_version <- as.character(packageVersion("energy"))
write.csv(out, "energy_mvnorm_e_fixtures.csv", row.names = FALSE)
print(format(out, digits = 17))
