//! The red Wine Quality data (1 599 wines × 11 features, quality 3..8 = 6 classes, shipped by
//! `linfa-datasets`), split and standardised the same way for every example that trains on it.

/// Standardised features (row-major `n × f`) and class indices.
pub struct Split {
    pub x: Vec<f32>,
    pub y: Vec<i32>,
}

impl Split {
    pub fn n(&self) -> usize {
        self.y.len()
    }
}

/// Every 5th wine is held out for testing; features are standardised with the training
/// set's mean and standard deviation; quality 3..8 becomes class 0..5.
pub fn load() -> (Split, Split, usize, usize) {
    let data = linfa_datasets::winequality();
    let (records, targets) = (data.records(), data.targets());
    let f = records.ncols();
    let min = *targets.iter().min().unwrap_or(&0);
    let classes = targets.iter().max().map_or(1, |m| m - min + 1);
    let is_test = |i: usize| i % 5 == 4;
    let train_rows: Vec<usize> = (0..records.nrows()).filter(|&i| !is_test(i)).collect();
    let mean: Vec<f64> = (0..f)
        .map(|j| train_rows.iter().map(|&i| records[[i, j]]).sum::<f64>() / train_rows.len() as f64)
        .collect();
    let std: Vec<f64> = (0..f)
        .map(|j| {
            let v = train_rows
                .iter()
                .map(|&i| (records[[i, j]] - mean[j]).powi(2))
                .sum::<f64>();
            (v / train_rows.len() as f64).sqrt().max(1e-12)
        })
        .collect();
    let (mean, std) = (&mean, &std);
    let split = |test: bool| {
        let rows: Vec<usize> = (0..records.nrows())
            .filter(|&i| is_test(i) == test)
            .collect();
        Split {
            x: rows
                .iter()
                .flat_map(|&i| (0..f).map(move |j| ((records[[i, j]] - mean[j]) / std[j]) as f32))
                .collect(),
            y: rows.iter().map(|&i| (targets[i] - min) as i32).collect(),
        }
    };
    (split(false), split(true), f, classes)
}
