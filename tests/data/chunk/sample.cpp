#include <string>
#include <vector>

namespace shapes {

// A closed polygon.
class Polygon : public Shape {
public:
    explicit Polygon(std::vector<Point> pts) : pts_(std::move(pts)) {}

    double area() const override
    {
        double a = 0;
        for (size_t i = 0; i < pts_.size(); i++) {
            const Point &p = pts_[i], &q = pts_[(i + 1) % pts_.size()];
            a += p.x * q.y - q.x * p.y;
        }
        return a / 2;
    }

    std::string name() const;

private:
    std::vector<Point> pts_;
};

std::string Polygon::name() const
{
    return "polygon";
}

template <typename T>
T clamp(T v, T lo, T hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

} // namespace shapes
