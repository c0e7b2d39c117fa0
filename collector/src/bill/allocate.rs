//! Splits an amount in proportion to weights, in whole smallest currency units, so the shares
//! add up exactly: each share is rounded down, and the units left go to the largest
//! remainders (ties to the first in order).

use rust_decimal::Decimal;

pub fn pro_rata<K: Copy>(
    amount: Decimal,
    weights: &[(K, u64)],
    minor_units: u32,
) -> Vec<(K, Decimal)> {
    let total: u64 = weights.iter().map(|(_, w)| w).sum();
    if total == 0 || weights.is_empty() {
        return weights.iter().map(|(k, _)| (*k, Decimal::ZERO)).collect();
    }
    let unit = Decimal::new(1, minor_units);
    let units = (amount / unit).trunc();
    let total = Decimal::from(total);
    let mut shares: Vec<(K, Decimal, Decimal)> = weights
        .iter()
        .map(|(k, w)| {
            let exact = units * Decimal::from(*w) / total;
            let floor = exact.trunc();
            (*k, floor, exact - floor)
        })
        .collect();
    let given: Decimal = shares.iter().map(|s| s.1).sum();
    let mut left = units - given;
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|a, b| shares[*b].2.cmp(&shares[*a].2).then(a.cmp(b)));
    for i in order {
        if left <= Decimal::ZERO {
            break;
        }
        shares[i].1 += Decimal::ONE;
        left -= Decimal::ONE;
    }
    shares.into_iter().map(|(k, u, _)| (k, u * unit)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn shares_add_up_to_the_cent() {
        let shares = pro_rata(d("10.00"), &[("a", 1), ("b", 1), ("c", 1)], 2);
        assert_eq!(
            shares,
            vec![("a", d("3.34")), ("b", d("3.33")), ("c", d("3.33"))]
        );
        let shares = pro_rata(d("0.05"), &[("a", 999), ("b", 1)], 2);
        assert_eq!(shares, vec![("a", d("0.05")), ("b", d("0.00"))]);
    }

    proptest::proptest! {
        #[test]
        fn any_split_is_exact(cents in 0u64..10_000_000, weights in proptest::collection::vec(0u64..1_000_000, 1..20)) {
            let amount = Decimal::new(cents as i64, 2);
            let keyed: Vec<(usize, u64)> = weights.iter().copied().enumerate().collect();
            let shares = pro_rata(amount, &keyed, 2);
            let sum: Decimal = shares.iter().map(|s| s.1).sum();
            if weights.iter().sum::<u64>() > 0 {
                proptest::prop_assert_eq!(sum, amount);
            }
        }
    }
}
